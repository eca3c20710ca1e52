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
from core.enums import Method
from core.errors import ConfigError, TrainingCancelled, TrainingDiverged
from core.metrics import evaluate
from core.models import Recommender
from core.teacher_cache import DEFAULT_BUDGET_BYTES, TeacherCache, distill_mask

MAX_LR = 10.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Saved with every run so the CLI can reproduce it.

    negatives:  negatives per positive for BPR (MF), drawn outside the user's positives;
                softmax models ignore it.
    patience:   epochs without a better validation NDCG@10 before stopping.
    min_epochs: never stop before this many epochs: a noisy validation curve often dips
                once early and recovers, and stopping at the first dip keeps a half-trained
                model (the best epoch's weights are restored either way).
    teacher_cache_mb: memory budget of the teacher's precomputed outputs (core.teacher_cache).
    device:     "auto" (CUDA when present), "cpu" or "cuda".
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives: int = 4
    patience: int = 3
    min_epochs: int = 1
    seed: int = 0
    device: str = "auto"
    teacher_cache_mb: int = DEFAULT_BUDGET_BYTES // 2**20

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
        if not 1 <= self.min_epochs <= self.epochs:
            raise ConfigError(
                f"min_epochs must be between 1 and epochs ({self.epochs}); got {self.min_epochs}."
            )
        if self.teacher_cache_mb < 1:
            raise ConfigError(
                f"teacher_cache_mb must be at least 1 (MB); got {self.teacher_cache_mb}."
            )
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
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. the teacher cache's form


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def validation_metrics(model: Recommender, data: InteractionData) -> dict[str, float]:
    result = evaluate(lambda u: model.score_users(data, u, "valid"), data, "valid", ks=(10,))
    return {"ndcg@10": result.metrics["ndcg@10"], "recall@10": result.metrics["recall@10"]}


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
    distill = distill or DistillConfig(method=Method.NONE)
    distill.validate()
    if distill.method != Method.NONE and teacher is None:
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

    cache = None
    notes: list[str] = []
    if teacher is not None and distill.method != Method.NONE:
        teacher.to(device).eval().requires_grad_(False)
        # The frozen teacher's outputs never change: score every training row once.
        budget = config.teacher_cache_mb * 2**20
        cache = TeacherCache(teacher, model, data, distill, budget_bytes=budget)
        if cache.note:
            notes.append(cache.note)

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
            if cache is None:
                loss, terms = step.task_loss, {"task": float(step.task_loss.detach())}
            else:
                mask = distill_mask(data, batch, step, data.n_items)
                loss, terms = distillation_loss(
                    step.task_loss,
                    step.rows,
                    cache.targets(batch, step, mask),
                    distill,
                    mask=mask,
                    generator=sample_gen,
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
        if epoch >= config.min_epochs and epoch - best_epoch >= config.patience:
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
        notes=tuple(notes),
    )
