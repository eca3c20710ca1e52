"""One pipeline for the CLI, the benchmarks and the app's job runner.

Load data (file or demo shop) -> build a model from its config -> train (with a frozen
teacher when distilling) -> evaluate on test with the full-ranking protocol. Everything the
UI shows comes from ``train_and_evaluate`` so that ``python -m core`` with the same seed
reproduces the same numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from core.dataset import InteractionData
from core.distill import DistillConfig
from core.enums import Family, Method, Role, choice_list
from core.errors import ConfigError
from core.metrics import EvalResult, evaluate, jaccard_at_k, kept_fraction
from core.models import ModelConfig, Recommender, build_model
from core.train import EpochReport, TrainConfig, TrainResult, train_model

# Defaults sized for the demo shop on 2 CPU cores (bench/distill.py): a 4-block teacher
# (1.18M parameters, ~17 s an epoch) and a 1-block d=32 student at 9.3% of its parameters
# (item embeddings dominate both, so the student's width is the main size knob).
TEACHER_MODEL = ModelConfig(family="sasrec", dim=128, layers=4, heads=2, max_len=50, dropout=0.2)
STUDENT_MODEL = ModelConfig(family="sasrec", dim=32, layers=1, heads=2, max_len=50, dropout=0.1)
TEACHER_TRAIN = TrainConfig(epochs=12, batch_size=128, lr=2e-3, patience=2)
STUDENT_TRAIN = TrainConfig(epochs=20, batch_size=128, lr=3e-3, patience=2)


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to reproduce one run; stored as the run's config JSON."""

    name: str
    role: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(method=Method.NONE))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "model": asdict(self.model),
            "train": asdict(self.train),
            "distill": asdict(self.distill),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSpec:
        if raw.get("role") not in set(Role):
            raise ConfigError(
                f"Unknown run role {raw.get('role')!r}; choose one of {choice_list(Role)}."
            )
        distill = raw.get("distill") or {"method": Method.NONE}
        return cls(
            name=str(raw.get("name") or raw["role"]),
            role=raw["role"],
            model=ModelConfig.from_dict(raw["model"]),
            train=TrainConfig.from_dict(raw.get("train") or {}),
            distill=DistillConfig(**distill),
        )


@dataclass(frozen=True)
class RunOutcome:
    spec: RunSpec
    model: Recommender
    training: TrainResult
    test: EvalResult
    train_seconds: float

    @property
    def params(self) -> int:
        return self.model.num_parameters()


def popularity_spec(seed: int = 0) -> RunSpec:
    return RunSpec(
        name="popularity",
        role=Role.POPULARITY,
        model=ModelConfig(family=Family.POPULARITY),
        train=TrainConfig(epochs=1, seed=seed),
    )


def student_specs(
    model: ModelConfig, train: TrainConfig, methods: tuple[str, ...], **knobs: Any
) -> list[RunSpec]:
    """The no-teacher baseline followed by one distilled student per method."""
    specs = [RunSpec(name="student-no-teacher", role=Role.BASELINE, model=model, train=train)]
    for method in methods:
        specs.append(
            RunSpec(
                name=f"student-{method}",
                role=Role.STUDENT,
                model=model,
                train=train,
                distill=DistillConfig(method=method, **knobs),
            )
        )
    return specs


def train_and_evaluate(
    data: InteractionData,
    spec: RunSpec,
    *,
    teacher: Recommender | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    cancel: threading.Event | None = None,
    ks: tuple[int, ...] = (10, 20),
) -> RunOutcome:
    """Build, train and test one model. Deterministic for a given spec and dataset."""
    if spec.distill.method != Method.NONE and teacher is None:
        raise ConfigError(
            f"Run {spec.name!r} distills with {spec.distill.method!r} but has no teacher."
        )
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model, data.n_users, data.n_items)
    started = time.perf_counter()
    training = train_model(
        model,
        data,
        spec.train,
        teacher=teacher if spec.distill.method != Method.NONE else None,
        distill=spec.distill,
        progress=progress,
        cancel=cancel,
    )
    train_seconds = time.perf_counter() - started
    test = test_metrics(model, data, ks=ks)
    return RunOutcome(spec, model, training, test, train_seconds)


def test_metrics(
    model: Recommender, data: InteractionData, ks: tuple[int, ...] = (10, 20)
) -> EvalResult:
    return evaluate(
        lambda users: model.score_users(data, users, "test"), data, "test", ks=ks, return_topk=True
    )


def teacher_overlap(student: EvalResult, teacher: EvalResult, k: int = 10) -> float:
    """Mean Jaccard@k between the student's and the teacher's test top-k lists."""
    if student.topk is None or teacher.topk is None:
        return float("nan")
    if not np.array_equal(student.users, teacher.users):
        raise ConfigError("Teacher and student were evaluated on different users.")
    return float(jaccard_at_k(student.topk[:, :k], teacher.topk[:, :k]).mean())


def epoch_seconds(training: TrainResult) -> float:
    """Median seconds of a training epoch (validation included), robust to a slow first one."""
    seconds = [r.seconds for r in training.history]
    return float(np.median(seconds)) if seconds else float("nan")


def summary_row(outcome: RunOutcome, teacher: RunOutcome | None = None) -> dict[str, Any]:
    """One row of the comparison table (the keys bench/distill.py writes)."""
    m = outcome.test.metrics
    row: dict[str, Any] = {
        "name": outcome.spec.name,
        "role": outcome.spec.role,
        "method": outcome.spec.distill.method if outcome.spec.role == Role.STUDENT else None,
        "params": outcome.params,
        "ndcg@10": m["ndcg@10"],
        "hr@10": m["hr@10"],
        "mrr@10": m["mrr@10"],
        "recall@20": m.get("recall@20"),
        "coverage@10": m["coverage@10"],
        "tail_recall@10": m["tail_recall@10"],
        "train_seconds": round(outcome.train_seconds, 2),
        "best_epoch": outcome.training.best_epoch,
        "seed": outcome.spec.train.seed,
        "valid_ndcg@10": outcome.training.best_val_ndcg,
        "epoch_seconds": epoch_seconds(outcome.training),
        "ndcg@10_new": outcome.test.slices.get("new", {}).get("ndcg@10", float("nan")),
        "ndcg@10_repeat": outcome.test.slices.get("repeat", {}).get("ndcg@10", float("nan")),
        "history_masked": bool(outcome.test.metrics.get("history_masked", 1.0)),
    }
    if teacher is not None:
        # A teacher that hits nothing has no share to keep: say "unknown", not infinity.
        kept = kept_fraction(m["ndcg@10"], teacher.test.metrics["ndcg@10"])
        row["teacher_kept"] = float("nan") if kept is None else kept
        row["jaccard@10_vs_teacher"] = teacher_overlap(outcome.test, teacher.test)
        row["params_vs_teacher"] = outcome.params / max(1, teacher.params)
    return row


def load_demo_dataset(scale: float = 1.0, seed: int = 7, split: Any = None) -> InteractionData:
    """The built-in demo shop, ingested through the same path as an upload."""
    from core.ingestion.build import build_dataset
    from core.ingestion.demo import DemoConfig, demo_content_hash, generate_demo
    from core.ingestion.options import ColumnMapping, SplitOptions

    config = DemoConfig(scale=scale, seed=seed)
    interactions, catalog = generate_demo(config)
    return build_dataset(
        interactions,
        ColumnMapping(
            user="user_id", item="item_id", timestamp="timestamp", rating=None, event="event"
        ),
        catalog=catalog,
        split=split or SplitOptions(),
        name="Demo shop" if scale == 1.0 else f"Demo shop x{scale:g}",
        content_hash=demo_content_hash(config),
        source_name="demo shop",
    )


def run_experiment(
    data: InteractionData,
    *,
    teacher: RunSpec,
    students: list[RunSpec],
    log: Callable[[str], None] = lambda _: None,
    outcomes: list[RunOutcome] | None = None,
) -> list[dict[str, Any]]:
    """Popularity, the teacher, then each student (baseline and distilled) on the same data.

    Returns the comparison rows, teacher-relative figures included. Used by the CLI and
    bench/distill.py so both print the numbers the app shows for the same seeds.
    ``outcomes``: a list to receive each run's :class:`RunOutcome`, models included.
    """
    outcomes = [] if outcomes is None else outcomes
    pop = train_and_evaluate(data, popularity_spec(teacher.train.seed))
    log(f"popularity        ndcg@10={pop.test.metrics['ndcg@10']:.4f}")

    def epoch_logger(name: str) -> Callable[[EpochReport], None]:
        return lambda r: log(
            f"  {name} epoch {r.epoch:>2} val ndcg@10={r.val['ndcg@10']:.4f} ({r.seconds:.1f}s)"
        )

    teach = train_and_evaluate(data, teacher, progress=epoch_logger("teacher"))
    log(f"teacher           ndcg@10={teach.test.metrics['ndcg@10']:.4f} params={teach.params:,}")
    outcomes += [pop, teach]
    for spec in students:
        out = train_and_evaluate(data, spec, teacher=teach.model, progress=epoch_logger(spec.name))
        for note in out.training.notes:
            log(f"  {spec.name}: {note}")
        log(
            f"{spec.name:<17} ndcg@10={out.test.metrics['ndcg@10']:.4f} params={out.params:,} "
            f"epochs={out.training.epochs_run} ({out.train_seconds:.0f}s)"
        )
        outcomes.append(out)
    return [summary_row(o, teach if o.spec.role != Role.TEACHER else None) for o in outcomes]
