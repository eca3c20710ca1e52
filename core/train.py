"""The training loop shared by teachers, students and no-teacher baselines.

Reads top to bottom: seed -> batches -> task loss (+ distillation terms against a frozen
teacher) -> Adam step -> validation NDCG@10 -> early stopping that restores the best weights.
Progress goes out through a callback and cancellation comes in through a threading.Event,
so the loop knows nothing about Streamlit or the database. One batch's loss is an
:class:`Objective`: the task loss over the catalog (full, sampled or chunked softmax, see
:mod:`core.models.softmax`) plus the distillation terms against the teacher's cached outputs.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from core.allocator import release_freed_memory, reuse_freed_blocks
from core.dataset import InteractionData
from core.distill import DistillConfig, distillation_loss
from core.embedding_init import init_from_teacher
from core.enums import Method
from core.errors import ConfigError, TrainingCancelled, TrainingDiverged
from core.metrics import evaluate
from core.models import Batch, Recommender
from core.models.softmax import LOSS_MODES, PROPOSALS, NegativeSampler, SoftmaxLoss
from core.teacher_cache import DEFAULT_BUDGET_BYTES, TeacherCache, candidate_rows, distill_mask

LR_SCHEDULES = ("constant", "linear")
MAX_ANNEAL_EPOCHS = 100

MAX_LR = 10.0
# More shared negatives than this cost more than a chunked exact loss would on any catalog
# where sampling is worth it, and [rows, M] logits start to rival the full ones.
MAX_SOFTMAX_NEGATIVES = 65_536


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
    loss:       how SASRec's next-item softmax covers the catalog: "full" (exact, one
                [rows, n_items] logit matrix per batch), "sampled" (sampled softmax with logQ
                correction: big catalogs) or "chunked" (exact, streamed over catalog chunks).
                The recipe picks it from the catalog size; other families keep their own
                loss (BPR for MF, full softmax for two-tower).
    softmax_negatives: M, items drawn per batch and shared by every row in "sampled" mode
                (and for a distilled student's candidates in "chunked" mode).
    softmax_proposal: q of those draws: "popularity" ((count + 1)^0.75) or "uniform".
    lr_schedule: "constant", or "linear": the rate falls linearly over the epochs, from lr in
                the first to lr / epochs in the last (torch's LinearLR, stepped each epoch).
                Meant for a fixed number of epochs (the live demo), where it lands the
                weights in a flatter spot than a constant rate stopped at the same epoch.
    anneal_epochs: with a constant rate, once early stopping (or the last epoch) ends it, the
                best epoch's weights are restored and train this many more epochs at a rate
                falling linearly from lr to lr / anneal_epochs, with a fresh optimizer (the
                old one's moments belong to later weights). Validation still picks the best
                epoch, so the tail can only raise the validation NDCG@10 a run keeps.
                A constant rate finds the plateau; the falling one settles into it.
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
    loss: str = "full"
    softmax_negatives: int = 1024
    softmax_proposal: str = "popularity"
    lr_schedule: str = "constant"
    anneal_epochs: int = 0

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
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {self.lr_schedule!r}."
            )
        if not 0 <= self.anneal_epochs <= MAX_ANNEAL_EPOCHS:
            raise ConfigError(
                f"anneal_epochs must be between 0 and {MAX_ANNEAL_EPOCHS}; "
                f"got {self.anneal_epochs}."
            )
        if self.anneal_epochs and self.lr_schedule != "constant":
            raise ConfigError(
                f"anneal_epochs follows a constant rate; with lr_schedule "
                f"{self.lr_schedule!r} the rate already falls, so set anneal_epochs to 0."
            )
        if self.loss not in LOSS_MODES:
            raise ConfigError(f"loss must be one of {', '.join(LOSS_MODES)}; got {self.loss!r}.")
        negatives = self.softmax_negatives
        if (
            isinstance(negatives, bool)
            or not isinstance(negatives, int)
            or not 1 <= negatives <= MAX_SOFTMAX_NEGATIVES
        ):
            raise ConfigError(
                f"softmax_negatives must be an integer from 1 to {MAX_SOFTMAX_NEGATIVES:,}; "
                f"got {negatives!r}."
            )
        if self.softmax_proposal not in PROPOSALS:
            raise ConfigError(
                f"softmax_proposal must be {' or '.join(PROPOSALS)}; got {self.softmax_proposal!r}."
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"Device must be auto, cpu or cuda; got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "CUDA was requested but no GPU is available here; choose auto or cpu."
            )
        return self

    def capped(self, cap: int) -> TrainConfig:
        """At most ``cap`` epochs in all, the anneal included (a quick run's ``--epochs``):
        the anneal keeps its length up to half the cap, the first phase takes the rest, and
        the minimum before early stopping is capped with it."""
        cap = max(1, int(cap))
        anneal = min(self.anneal_epochs, cap // 2)
        epochs = max(1, min(self.epochs, cap - anneal))
        return replace(
            self, epochs=epochs, min_epochs=min(self.min_epochs, epochs), anneal_epochs=anneal
        )

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


class Objective:
    """One batch's training loss for ``model``: task loss, plus distillation for a student.

    Built once per run. The task loss covers the catalog as ``config.loss`` says (for models
    that offer it: ``Recommender.softmax_modes``); sampled negatives come from their own
    seeded generator, so a full-softmax run draws exactly what it drew before they existed.
    With a teacher, the teacher's outputs are computed once (:class:`TeacherCache`); a
    student that never scores the whole catalog is distilled on candidates
    (:func:`core.teacher_cache.candidate_rows`).
    """

    def __init__(
        self,
        model: Recommender,
        data: InteractionData,
        config: TrainConfig,
        *,
        teacher: Recommender | None = None,
        distill: DistillConfig | None = None,
        generator: torch.Generator | None = None,
    ):
        self.model, self.data = model, data
        self.distill = distill or DistillConfig(method=Method.NONE)
        self.generator = generator  # the distillation terms' own draws (listwise)
        self.notes: list[str] = []
        distilling = teacher is not None and self.distill.method != Method.NONE
        self.mode = config.loss if config.loss in model.softmax_modes else "full"
        if config.loss != self.mode:
            self.notes.append(
                f"The {model.family} model trains with its own loss; the {config.loss} "
                "softmax setting applies to SASRec."
            )
        self.sampler = None
        if self.mode == "sampled" or (self.mode == "chunked" and distilling):
            self.sampler = NegativeSampler(
                data.item_popularity,
                config.softmax_negatives,
                config.softmax_proposal,
                torch.Generator(device="cpu").manual_seed(config.seed),
            )
        if self.mode == "sampled":
            self.notes.append(
                f"Task loss: sampled softmax over {config.softmax_negatives:,} shared negatives "
                f"per batch ({config.softmax_proposal} proposal) with logQ correction."
            )
        elif self.mode == "chunked":
            self.notes.append("Task loss: exact softmax, computed over catalog chunks.")
        self.cache = None
        if distilling:
            teacher.to(model.device).eval().requires_grad_(False)
            if self.distill.teacher_init:
                self.notes.append(init_from_teacher(model, teacher))
            # The frozen teacher's outputs never change: score every training row once.
            self.cache = TeacherCache(
                teacher,
                model,
                data,
                self.distill,
                budget_bytes=config.teacher_cache_mb * 2**20,
                full_scores=self.mode == "full",
            )
            if self.cache.note:
                self.notes.append(self.cache.note)

    def softmax(self) -> SoftmaxLoss | None:
        """This batch's softmax setting (None: the full softmax, as before it existed)."""
        if self.mode == "full":
            return None
        if self.sampler is None:
            return SoftmaxLoss(self.mode)
        return self.sampler.softmax_loss(self.mode)

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, terms)`` of one batch already on the model's device."""
        softmax = self.softmax()
        if softmax is not None:
            batch = replace(batch, softmax=softmax.to(batch.context.device))
        step = self.model.training_step(batch)
        if self.cache is None:
            return step.task_loss, {"task": float(step.task_loss.detach())}
        if step.rows is not None:
            mask = distill_mask(self.data, batch, step, self.data.n_items)
            return distillation_loss(
                step.task_loss,
                step.rows,
                self.cache.targets(batch, step, mask),
                self.distill,
                mask=mask,
                generator=self.generator,
                log_partition=step.log_partition,
            )
        scores, mask, targets, candidates = candidate_rows(
            self.model, batch, step, self.cache.targets(batch, step, None), self.data.masks_history
        )
        return distillation_loss(
            step.task_loss,
            scores,
            targets,
            self.distill,
            mask=mask,
            generator=self.generator,
            candidates=candidates,
        )


def make_optimizer(model: Recommender, config: TrainConfig) -> torch.optim.Adam:
    """The optimizer every run trains with."""
    # foreach: one kernel call per update op for all parameters at once, not one per
    # parameter (the default on CUDA already; on CPU a d24 student's step took ~15% less
    # time, with the same weights bit for bit).
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )


def optimizer_step(
    objective: Objective, optimizer: torch.optim.Optimizer, batch: Batch
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """One training step on ``batch`` (already on the model's device): the loss, its
    gradient and the update. Returns ``(loss, terms)``, or ``(None, terms)`` with no update
    when the loss is not finite (``terms["total"]`` holds it)."""
    loss, terms = objective(batch)
    if not torch.isfinite(loss):
        return None, terms | {"total": float(loss.detach())}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, terms


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
    """Train ``model`` in place; on return it holds the weights of its best validation epoch.

    Freed score matrices are kept for reuse while it trains, and the free memory is handed
    back when it ends (:mod:`core.allocator`).
    """
    reuse_freed_blocks()
    try:
        return _train(
            model, data, config, teacher=teacher, distill=distill, progress=progress, cancel=cancel
        )
    finally:
        release_freed_memory()


def _train(
    model: Recommender,
    data: InteractionData,
    config: TrainConfig,
    *,
    teacher: Recommender | None,
    distill: DistillConfig | None,
    progress: Callable[[EpochReport], None] | None,
    cancel: threading.Event | None,
) -> TrainResult:
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

    objective = Objective(
        model, data, config, teacher=teacher, distill=distill, generator=sample_gen
    )
    notes = objective.notes

    def falling(optimizer: torch.optim.Optimizer, epochs: int):
        """The rate falls linearly from lr (first epoch) to lr / epochs (last)."""
        if epochs <= 1:
            return None
        return torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1.0, end_factor=1.0 / epochs, total_iters=epochs - 1
        )

    best_ndcg, best_epoch, best_state = -1.0, 0, None
    history: list[EpochReport] = []
    planned = config.epochs + config.anneal_epochs  # epochs in all, as far as known

    def run_epoch(epoch: int, optimizer: torch.optim.Optimizer, schedule) -> None:
        """One pass over the batches, then validation; keeps the best weights and reports."""
        nonlocal best_ndcg, best_epoch, best_state
        epoch_start = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        total, n_batches = 0.0, 0
        for batch in model.task_batches(data, config.batch_size, config.negatives, rng):
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled(f"Cancelled by the user during epoch {epoch}.")
            loss, terms = optimizer_step(objective, optimizer, batch.to(device))
            if loss is None:
                raise TrainingDiverged(
                    f"The loss became {terms['total']} in epoch {epoch}, batch "
                    f"{n_batches + 1}; lower the learning rate or the distillation weights "
                    "and try again."
                )
            n_batches += 1
            for name, value in terms.items():
                if name != "total":
                    sums[name] = sums.get(name, 0.0) + float(value)
            total += float(loss.detach())
        if n_batches == 0:
            raise ConfigError(
                "There is nothing to train on: no user has two training interactions."
            )

        if schedule is not None:
            schedule.step()
        val = validation_metrics(model, data)
        improved = val["ndcg@10"] > best_ndcg
        if improved:
            best_ndcg, best_epoch = val["ndcg@10"], epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        seconds = time.perf_counter() - epoch_start
        mean_epoch = (time.perf_counter() - started) / epoch
        report = EpochReport(
            epoch=epoch,
            epochs=planned,
            loss=total / n_batches,
            terms={k: v / n_batches for k, v in sums.items()},
            val=val,
            seconds=seconds,
            eta_seconds=mean_epoch * (planned - epoch),
            best_epoch=best_epoch,
            improved=improved,
        )
        history.append(report)
        if progress:
            progress(report)

    optimizer = make_optimizer(model, config)
    schedule = falling(optimizer, config.epochs) if config.lr_schedule == "linear" else None
    stopped_early = False
    for epoch in range(1, config.epochs + 1):
        run_epoch(epoch, optimizer, schedule)
        if epoch >= config.min_epochs and epoch - best_epoch >= config.patience:
            stopped_early = epoch < config.epochs
            break
    if config.anneal_epochs and best_state is not None:
        # The anneal starts from the best weights, with a fresh optimizer.
        done = len(history)
        planned = done + config.anneal_epochs
        model.load_state_dict(best_state)
        optimizer = make_optimizer(model, config)
        schedule = falling(optimizer, config.anneal_epochs)
        for epoch in range(done + 1, planned + 1):
            run_epoch(epoch, optimizer, schedule)

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
