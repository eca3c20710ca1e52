"""The training loop shared by teachers, students and no-teacher baselines.

Reads top to bottom: seed -> batches -> task loss (+ distillation terms against a frozen
teacher) -> Adam step -> validation NDCG@10 -> early stopping that restores the best weights.
Progress goes out through a callback and cancellation comes in through a threading.Event,
so the loop knows nothing about Streamlit or the database.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from core.dataset import InteractionData
from core.distill import DistillConfig, distillation_loss
from core.errors import ConfigError, TrainingCancelled, TrainingDiverged
from core.metrics import evaluate
from core.models import Recommender, user_history_mask

# Above this many teacher scores (users x items) the teacher is run per batch instead of
# caching one row per user: 50M floats is 200 MB, the most we want resident for a cache.
TEACHER_CACHE_LIMIT = 50_000_000
MAX_LR = 10.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Saved with every run so the CLI can reproduce it.

    negatives: uniform negatives per positive for BPR (MF); softmax models ignore it.
    patience:  epochs without a better validation NDCG@10 before stopping.
    device:    "auto" (CUDA when present), "cpu" or "cuda".
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives: int = 4
    patience: int = 3
    seed: int = 0
    device: str = "auto"

    def validate(self) -> TrainConfig:
        if self.epochs < 1 or self.batch_size < 1 or self.negatives < 1:
            raise ConfigError("Epochs, batch size and negatives must all be at least 1.")
        # Adam's step overflows float32 far below inf (lr=1e38 raises a bare RuntimeError
        # mid-epoch), and no sensible run uses an Adam learning rate above 10.
        if not 0 < self.lr <= MAX_LR:
            raise ConfigError(
                f"The learning rate must be a number above 0 and at most {MAX_LR:g}; got {self.lr}."
            )
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(
                f"Weight decay must be a number of at least 0; got {self.weight_decay}."
            )
        if self.patience < 1:
            raise ConfigError("Patience must be at least 1 epoch.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"Device must be auto, cpu or cuda; got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "CUDA was requested but no GPU is available here; choose auto or cpu."
            )
        return self

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known}).validate()


@dataclass(frozen=True)
class EpochReport:
    """What the progress callback receives after each epoch."""

    epoch: int
    epochs: int
    loss: float
    terms: dict[str, float]
    val: dict[str, float]
    seconds: float
    eta_seconds: float
    best_epoch: int
    improved: bool


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_ndcg: float
    epochs_run: int
    seconds: float
    stopped_early: bool
    history: tuple[EpochReport, ...] = field(default_factory=tuple)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def validation_metrics(model: Recommender, data: InteractionData) -> dict[str, float]:
    result = evaluate(lambda u: model.score_users(data, u, "valid"), data, "valid", ks=(10,))
    return {"ndcg@10": result.metrics["ndcg@10"], "recall@10": result.metrics["recall@10"]}


class TeacherScores:
    """Scores of a frozen teacher for the student's distillation rows.

    When both models read sequences of the same length, the teacher scores exactly the
    student's prefixes (every position is a distillation row). Otherwise the teacher's view of
    each user after the whole training history is used, cached when it fits in memory.
    """

    def __init__(self, teacher: Recommender, student: Recommender, data: InteractionData):
        self.teacher = teacher
        self.data = data
        self.same_prefixes = (
            teacher.input_kind == student.input_kind == "sequence"
            and teacher.config.max_len == student.config.max_len
        )
        self.cache: torch.Tensor | None = None
        if not self.same_prefixes and data.n_users * data.n_items <= TEACHER_CACHE_LIMIT:
            users = np.arange(data.n_users)
            self.cache = torch.cat(
                [
                    teacher.score_users(data, users[i : i + 1024], "train")
                    for i in range(0, len(users), 1024)
                ]
            )

    @torch.no_grad()
    def rows(
        self, context: torch.Tensor, positions: torch.Tensor | None, row_users: torch.Tensor
    ) -> torch.Tensor:
        if self.same_prefixes and positions is not None:
            return self.teacher.position_scores(context)[positions]
        if self.cache is not None:
            return self.cache[row_users]
        return self.teacher.score_users(self.data, row_users.cpu().numpy(), "train")


def train_model(
    model: Recommender,
    data: InteractionData,
    config: TrainConfig,
    *,
    teacher: Recommender | None = None,
    distill: DistillConfig | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of its best validation epoch."""
    config.validate()
    distill = distill or DistillConfig(method="none")
    distill.validate()
    if distill.method != "none" and teacher is None:
        raise ConfigError(f"Distillation method {distill.method!r} needs a teacher run.")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sample_gen = torch.Generator(device="cpu").manual_seed(config.seed)
    model.to(device)
    started = time.perf_counter()

    if not model.trainable:
        model.fit_statistics(data)
        val = validation_metrics(model, data)
        seconds = time.perf_counter() - started
        report = EpochReport(1, 1, 0.0, {}, val, seconds, 0.0, 1, True)
        if progress:
            progress(report)
        return TrainResult(1, val["ndcg@10"], 1, seconds, False, (report,))

    teacher_scores = None
    history_mask = None
    if teacher is not None and distill.method != "none":
        teacher.to(device).eval().requires_grad_(False)
        teacher_scores = TeacherScores(teacher, model, data)
        if data.n_users * data.n_items <= 4 * TEACHER_CACHE_LIMIT:
            history_mask = user_history_mask(data, torch.arange(data.n_users), device)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_ndcg, best_epoch, best_state = -1.0, 0, None
    history: list[EpochReport] = []
    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        total, n_batches = 0.0, 0
        for batch in model.task_batches(data, config.batch_size, config.negatives, rng):
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled(f"Cancelled by the user during epoch {epoch}.")
            batch = batch.to(device)
            step = model.training_step(batch)
            if teacher_scores is None:
                loss, terms = step.task_loss, {"task": float(step.task_loss.detach())}
            else:
                z_t = teacher_scores.rows(batch.context, step.positions, step.row_users)
                mask = (
                    history_mask[step.row_users]
                    if history_mask is not None
                    else user_history_mask(data, step.row_users, device)
                )
                loss, terms = distillation_loss(
                    step.task_loss, step.rows, z_t, distill, mask=mask, generator=sample_gen
                )
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"The loss became {float(loss.detach())} in epoch {epoch}, batch {n_batches + 1}; "
                    "lower the learning rate or the distillation weights and try again."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n_batches += 1
            for name, value in terms.items():
                if name != "total":
                    sums[name] = sums.get(name, 0.0) + float(value)
            total += float(loss.detach())
        if n_batches == 0:
            raise ConfigError(
                "There is nothing to train on: no user has two training interactions."
            )

        val = validation_metrics(model, data)
        improved = val["ndcg@10"] > best_ndcg
        if improved:
            best_ndcg, best_epoch = val["ndcg@10"], epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        seconds = time.perf_counter() - epoch_start
        mean_epoch = (time.perf_counter() - started) / epoch
        terms = {k: v / n_batches for k, v in sums.items()}
        report = EpochReport(
            epoch=epoch,
            epochs=config.epochs,
            loss=total / n_batches,
            terms=terms,
            val=val,
            seconds=seconds,
            eta_seconds=mean_epoch * (config.epochs - epoch),
            best_epoch=best_epoch,
            improved=improved,
        )
        history.append(report)
        if progress:
            progress(report)
        if epoch - best_epoch >= config.patience:
            stopped_early = epoch < config.epochs
            break

    optimizer.zero_grad(set_to_none=True)  # release gradient memory; a teacher keeps none
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        best_epoch=best_epoch,
        best_val_ndcg=best_ndcg,
        epochs_run=len(history),
        seconds=time.perf_counter() - started,
        stopped_early=stopped_early,
        history=tuple(history),
    )
