"""Turn what the Data, Train and Home pages collect into validated configs and run plans.

Pages hand raw widget values to these functions and get back frozen configs (`ColumnMapping`,
`CleanOptions`, `RunSpec`, ...) or a `ConfigError` / `DataError` whose message is shown as
one sentence. Nothing here touches Streamlit, and nothing blocks: queueing is left to the
page (through the job manager), so a student is only planned, never waited for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from core.dataset import InteractionData
from core.distill import DistillConfig
from core.enums import ACTIVE_STATUSES, DISTILL_METHODS, Family, Method, Role, Status, choice_list
from core.errors import ConfigError, DataError
from core.ingestion.options import CleanOptions, ColumnMapping
from core.ingestion.registry import fingerprint, register_dataset
from core.job_context import Progress
from core.models import ModelConfig, count_parameters
from core.pipeline import (
    STUDENT_MODEL,
    STUDENT_TRAIN,
    TEACHER_MODEL,
    TEACHER_TRAIN,
    RunSpec,
    popularity_spec,
)
from core.recipe import SOFT_ALPHA, DataProfile, Recipe, recipe
from core.records import DatasetRecord, RunRecord
from core.store import Store
from core.train import MAX_ANNEAL_EPOCHS, TrainConfig
from core.views.text import format_duration

NONE = "(none)"
FAMILY_LABELS = {
    Family.SASREC: "SASRec (sequential)",
    Family.TWO_TOWER: "Two-tower MLP",
    Family.MF: "MF (BPR)",
}
DEVICES = ("auto", "cpu", "cuda")
# The knobs each distillation method reads (DistillConfig field names), in display order.
# "teacher_init" (core.embedding_init) applies to every method; its checkbox on Train and Sweep.
TEACHER_INIT_LABEL = "Start the student's item table from the teacher's"
TEACHER_INIT_HELP = (
    "Its leading principal directions instead of random weights (the twin stays random): "
    "helps the smallest students most."
)
METHOD_KNOBS: dict[str, tuple[str, ...]] = {
    Method.SOFT: ("temperature", "alpha", "teacher_init"),
    Method.HARD: ("top_k", "beta", "teacher_init"),
    Method.COMBINED: ("temperature", "alpha", "beta", "top_k", "teacher_init"),
    Method.RANKING: ("top_k", "lam", "weight", "dynamic", "mu", "teacher_init"),
    Method.LISTWISE: ("top_k", "weight", "n_sampled", "teacher_init"),
}


@dataclass(frozen=True)
class NumberField:
    """One numeric widget of the Train page; its default comes from a preset config."""

    name: str  # the ModelConfig / TrainConfig / DistillConfig field it sets
    label: str
    low: int | float
    high: int | float
    step: int | float | None = None
    families: tuple[str, ...] = ()  # model families it applies to; empty = all
    fmt: str | None = None


SIZE_FIELDS = (
    NumberField("dim", "Embedding size", 1, 2048),
    NumberField("layers", "Layers", 1, 12, families=(Family.SASREC, Family.TWO_TOWER)),
    NumberField("heads", "Heads", 1, 16, families=(Family.SASREC,)),
    NumberField("max_len", "History length", 2, 500, families=(Family.SASREC,)),
    NumberField("hidden", "Hidden width", 1, 4096, families=(Family.TWO_TOWER,)),
)
TRAIN_FIELDS = (
    NumberField("epochs", "Epochs", 1, 1000),
    NumberField("lr", "Learning rate", 1e-6, 1.0, 1e-4, fmt="%.4f"),
    NumberField("batch_size", "Batch size", 1, 65536),
    NumberField("negatives", "Negatives", 1, 1000),
    NumberField("patience", "Patience", 1, 100),
    NumberField("min_epochs", "Min epochs", 1, 1000),
    NumberField("seed", "Seed", 0, 2**31 - 1),
)
# The anneal after early stopping (TrainConfig.anneal_epochs) applies to a constant rate only;
# a student whose rate already falls over its epochs is not offered it.
ANNEAL_FIELD = NumberField("anneal_epochs", "Anneal epochs", 0, MAX_ANNEAL_EPOCHS)
KNOB_FIELDS = {
    "temperature": NumberField("temperature", "Temperature T", 0.1, 50.0, 0.5),
    "alpha": NumberField("alpha", "Soft weight a", 0.0, 1.0, 0.05),
    "beta": NumberField("beta", "Hard weight b", 0.0, 100.0, 0.1),
    "top_k": NumberField("top_k", "Teacher top-K", 1, 200),
    "lam": NumberField("lam", "Position decay lambda", 0.1, 100.0, 0.5),
    "weight": NumberField("weight", "Term weight l", 0.0, 100.0, 0.1),
    "mu": NumberField("mu", "Dynamic sharpness mu", 0.01, 10.0, 0.05),
    "n_sampled": NumberField("n_sampled", "Listwise sampled items", 1, 5000),
}
# The boolean knobs ("dynamic", "teacher_init") are checkboxes; every other knob is in
# KNOB_FIELDS.
DISTILL_DEFAULTS = DistillConfig(method=Method.SOFT)


def train_fields(base: TrainConfig) -> list[NumberField]:
    """The training widgets for a preset: the anneal only where the rate is constant."""
    return [*TRAIN_FIELDS, ANNEAL_FIELD] if base.lr_schedule == "constant" else list(TRAIN_FIELDS)


def size_fields(family: str) -> list[NumberField]:
    """The size widgets that apply to ``family``."""
    return [f for f in SIZE_FIELDS if not f.families or family in f.families]


# --------------------------------------------------------------------------- data page
def column_options(
    columns: Sequence[str], detected: str | None, optional: bool
) -> tuple[list[str], int]:
    """Selectbox options for one column role and the index of the detected column."""
    options = ([NONE] if optional else []) + [str(c) for c in columns]
    if detected is not None and str(detected) in options:
        return options, options.index(str(detected))
    return options, 0


def mapping_from_choices(
    user: str, item: str, timestamp: str = NONE, rating: str = NONE, event: str = NONE
) -> ColumnMapping:
    """A ColumnMapping from selectbox values; the same column may hold only one role."""
    roles = {"user": user, "item": item, "timestamp": timestamp, "rating": rating, "event": event}
    for role in ("user", "item"):
        if roles[role] in (None, "", NONE):
            raise DataError(f"Choose the column that holds the {role} id.")
    seen: dict[str, str] = {}
    for role, column in roles.items():
        if column in (None, "", NONE):
            continue
        if column in seen:
            raise DataError(
                f"Column '{column}' is mapped to both {seen[column]} and {role}; "
                "map each column to one role only."
            )
        seen[column] = role
    return ColumnMapping(
        user=user,
        item=item,
        **{
            r: (None if roles[r] in (None, "", NONE) else roles[r])
            for r in ("timestamp", "rating", "event")
        },
    )


def clean_options(
    *,
    min_rating: float | None,
    dedupe: bool,
    min_user: int,
    min_item: int,
    view: float,
    cart: float,
    purchase: float,
) -> CleanOptions:
    """Cleaning options from the form; the three event weights override the defaults."""
    return CleanOptions(
        min_rating=None if min_rating is None else float(min_rating),
        dedupe=bool(dedupe),
        min_user_interactions=int(min_user),
        min_item_interactions=int(min_item),
        event_weights={"view": float(view), "cart": float(cart), "purchase": float(purchase)},
    )


def save_dataset(store: Store, data: InteractionData, source: str) -> tuple[DatasetRecord, bool]:
    """Register ``data``; returns the record and whether it is new (same content -> reused)."""
    existed = store.find_dataset(fingerprint(data)) is not None
    record = register_dataset(store, data, source=source)
    return record, not existed


def dataset_label(record: DatasetRecord) -> str:
    return f"#{record.id} {record.name} ({record.n_users:,} users, {record.n_items:,} items)"


# --------------------------------------------------------------------------- train page
def model_config(family: str, *, base: ModelConfig = STUDENT_MODEL, **sizes: Any) -> ModelConfig:
    """A validated ModelConfig of ``family``; sizes not given keep ``base``'s values."""
    known = {k: v for k, v in sizes.items() if v is not None}
    return replace(base, family=family, **known).validate()


def train_config(*, base: TrainConfig = STUDENT_TRAIN, **values: Any) -> TrainConfig:
    """A validated TrainConfig; values not given keep ``base``'s (a preset).

    A minimum number of epochs above the maximum means "train them all": it is lowered to
    the maximum rather than refused, since the two widgets are set one at a time.
    """
    known = {k: v for k, v in values.items() if v is not None}
    config = replace(base, **known)
    return replace(config, min_epochs=min(config.min_epochs, config.epochs)).validate()


def distill_config(method: str, **knobs: Any) -> DistillConfig:
    """A validated DistillConfig holding only the knobs ``method`` reads (others default)."""
    if method not in METHOD_KNOBS:
        raise ConfigError(
            f"Unknown distillation method {method!r}; choose one of {choice_list(DISTILL_METHODS)}."
        )
    used = {k: v for k, v in knobs.items() if k in METHOD_KNOBS[method] and v is not None}
    for name in ("top_k", "n_sampled"):
        if name in used and isinstance(used[name], float) and used[name].is_integer():
            used[name] = int(used[name])
    return DistillConfig(method=method, **used).validate()


@lru_cache(maxsize=256)
def parameter_count(config: ModelConfig, n_users: int, n_items: int) -> int:
    """Trainable parameters of ``config`` on a dataset of this size (cached: it builds a model)."""
    return count_parameters(config, n_users, n_items)


def size_ratio(params: int | None, teacher_params: int | None) -> float | None:
    """Student parameters as a fraction of the teacher's (None when either is unknown)."""
    if not params or not teacher_params:
        return None
    return params / teacher_params


def run_name(role: str, model: ModelConfig, method: str | None = None) -> str:
    """A short default run name such as ``student-soft sasrec d12``."""
    size = "" if model.family == Family.POPULARITY else f" d{model.dim}"
    if role == Role.STUDENT:
        return f"student-{method} {model.family}{size}"
    if role == Role.BASELINE:
        return f"student-no-teacher {model.family}{size}"
    return f"{role} {model.family}{size}"


@dataclass(frozen=True)
class Launch:
    """One run to queue: its spec and the teacher it is grouped with (None for teachers)."""

    spec: RunSpec
    teacher_run_id: int | None = None


def teacher_spec(model: ModelConfig, train: TrainConfig, name: str = "") -> RunSpec:
    return RunSpec(
        name=name.strip() or run_name(Role.TEACHER, model),
        role=Role.TEACHER,
        model=model,
        train=train,
    )


def teacher_launches(
    family: str,
    sizes: dict[str, Any],
    train: dict[str, Any],
    name: str = "",
    plan: Recipe | None = None,
) -> list[Launch]:
    """The teacher form's values as the one run to queue (the recipe fills what is not
    given; the fixed presets without one)."""
    plan = plan or presets(None)
    model = model_config(family, base=plan.teacher, **sizes)
    return [Launch(teacher_spec(model, train_config(base=plan.teacher_train, **train), name))]


def student_specs_for(
    model: ModelConfig, train: TrainConfig, distill: DistillConfig, with_baseline: bool = True
) -> list[RunSpec]:
    """The distilled student and, optionally, its no-teacher twin (same model and training)."""
    student = RunSpec(
        run_name(Role.STUDENT, model, distill.method), Role.STUDENT, model, train, distill
    )
    if not with_baseline:
        return [student]
    return [student, RunSpec(run_name(Role.BASELINE, model), Role.BASELINE, model, train)]


def student_launches(
    model: ModelConfig,
    train: TrainConfig,
    distill: DistillConfig,
    *,
    teacher_run_id: int,
    with_baseline: bool = True,
    with_popularity: bool = False,
) -> list[Launch]:
    """What the student form queues, in order: the distilled student, optionally its
    no-teacher twin (grouped under the same teacher so Compare finds it) and popularity."""
    runs = [
        Launch(spec, teacher_run_id)
        for spec in student_specs_for(model, train, distill, with_baseline)
    ]
    if with_popularity:
        runs.append(Launch(popularity_spec(train.seed)))
    return runs


def has_popularity(runs: Iterable[RunRecord]) -> bool:
    """Whether a popularity run already exists (finished or on its way) among ``runs``."""
    wanted = {Status.SUCCEEDED, *ACTIVE_STATUSES}
    return any(r.role == Role.POPULARITY and r.status in wanted for r in runs)


# --------------------------------------------------------------------------- demo
@dataclass(frozen=True)
class DemoPlan:
    """The one-click demo: popularity and a teacher now, students once the teacher succeeds."""

    popularity: RunSpec
    teacher: RunSpec
    students: tuple[RunSpec, ...]  # the distilled student, then its no-teacher twin


def presets(record: DatasetRecord | None) -> Recipe:
    """The dataset's recipe (core/recipe.py) from its stored statistics.

    Datasets registered before the recipe existed lack some statistics: they get the fixed
    presets of core/pipeline.py, and the recipe's reasons say so.
    """
    try:
        if record is None:
            raise KeyError("no dataset")
        return recipe(DataProfile.from_stats(record.stats))
    except KeyError:
        return Recipe(
            TEACHER_MODEL,
            TEACHER_TRAIN,
            STUDENT_MODEL,
            STUDENT_TRAIN,
            distill_config(Method.SOFT, alpha=SOFT_ALPHA),  # the recipe's method
            (
                "Fixed presets: this dataset was registered before presets came from its statistics.",
            ),
        )


def demo_plan(epochs: int | None = None, plan: Recipe | None = None) -> DemoPlan:
    """The demo's teacher and student from the dataset's recipe; ``epochs`` caps every run.

    The student is distilled with the recipe's method; its no-teacher twin has the same
    architecture and training settings.
    """

    def capped(train: TrainConfig) -> TrainConfig:
        return train if epochs is None else train.capped(epochs)

    plan = plan or presets(None)
    teacher_train, student_train = capped(plan.teacher_train), capped(plan.student_train)
    return DemoPlan(
        popularity=popularity_spec(teacher_train.seed),
        teacher=teacher_spec(plan.teacher, teacher_train),
        students=tuple(student_specs_for(plan.student, student_train, plan.distill)),
    )


# --------------------------------------------------------------------------- live panel
def progress_text(progress: Progress) -> str:
    """One line under a run's progress bar: epoch, ETA, loss, validation NDCG."""
    if progress.status == Status.QUEUED:
        return "queued: " + (progress.message or "waiting for a worker")
    if progress.status == Status.WAITING:
        return "waiting for its teacher"
    parts = []
    if progress.total_epochs:
        parts.append(f"epoch {progress.epoch}/{progress.total_epochs}")
    if progress.eta_seconds is not None:
        parts.append(f"ETA {format_duration(progress.eta_seconds)}")
    if progress.loss is not None and math.isfinite(progress.loss):
        parts.append(f"loss {progress.loss:.4f}")
    if progress.val_metric is not None:
        parts.append(f"val NDCG@10 {progress.val_metric:.4f}")
    if not parts:
        parts.append(progress.message or progress.status)
    return " · ".join(parts)


def finished_runs(watched: Iterable[int], active: Iterable[int]) -> list[int]:
    """Watched run ids that are no longer active (each gets a "finished" toast once)."""
    still = set(active)
    return [run_id for run_id in watched if run_id not in still]
