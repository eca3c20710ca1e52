"""The numbers behind a handoff's gates and model card, read from the store only.

``collect_facts`` gathers, for one run and the artifact chosen to be handed off (fp32 or
int8), its quality through each runtime next to the teacher, the no-teacher twin and
popularity; the latency rows of its newest preparation; parity; sizes; artifacts and the
machine they were measured on. Nothing here measures anything: an unprepared run has
facts too, with the measured ones missing (the gates then fail and say so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.enums import Role, Status
from core.errors import ConfigError
from core.metrics import kept_fraction
from core.models import MODELS
from core.records import LatencyRecord, RunRecord, finite_or_none, metric_key
from core.serving.latency import RUNTIMES
from core.serving.prepare import (
    ARTIFACT_KINDS,
    HANDOFF_CHOICES,
    INT8_FILE,
    ONNX_FILE,
    SPLIT_INT8,
    SPLIT_ONNX,
    SPLIT_TORCH,
    checked_run,
    handoff_teacher,
)
from core.store import Store
from core.views.text import run_title

# The metrics of the card's quality table (each at the card's K).
CARD_METRICS = ("ndcg", "hr", "mrr", "coverage", "tail_recall")


def kept_key(k: int) -> str:
    """The quality rows' "% of the teacher's NDCG@K kept" column."""
    return f"{metric_key('ndcg', k)} kept %"


@dataclass(frozen=True)
class HandoffFacts:
    """The numbers behind the gates and the model card, read from the store.

    The first block is what the gates check (for the artifact being handed off); the
    rest is context for the card. Built by ``collect_facts``; tests may build it by hand.
    ``ndcg`` is the handed-off artifact's NDCG@K through onnxruntime; teacher and twin
    figures are their PyTorch test results (an fp32 export ranks the same, see parity).
    """

    ndcg: float | None = None
    teacher_ndcg: float | None = None
    twin_id: int | None = None
    twin_ndcg: float | None = None
    p95_ms: float | None = None
    size_bytes: int | None = None
    parity_max_diff: float | None = None
    topk_agreement: float | None = None
    k: int = 10
    handoff: str = "fp32"
    twin_note: str = ""  # why there is no twin, when there is none
    teacher_note: str = ""  # why there is no teacher figure, when there is none
    run: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[dict[str, Any], ...] = ()
    latency: tuple[dict[str, Any], ...] = ()
    parity: dict[str, Any] | None = None
    sizes: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[dict[str, Any], ...] = ()
    environment: dict[str, Any] = field(default_factory=dict)
    prepared: str | None = None  # when the parity check of the preparation was stored

    @property
    def artifact(self) -> str:
        return HANDOFF_CHOICES[self.handoff][0]

    @property
    def runtime(self) -> str:
        return HANDOFF_CHOICES[self.handoff][1]

    @property
    def is_prepared(self) -> bool:
        return self.parity is not None


def find_twin(store: Store, run: RunRecord) -> RunRecord | None:
    """The newest succeeded no-teacher baseline with the same teacher and model config."""
    if run.role != Role.STUDENT or run.teacher_run_id is None:
        return None
    twins = [
        r
        for r in store.list_runs(
            dataset_id=run.dataset_id,
            role=Role.BASELINE,
            status=Status.SUCCEEDED,
            teacher_run_id=run.teacher_run_id,
        )
        if r.config.get("model") == run.config.get("model")
    ]
    return max(twins, key=lambda r: r.id) if twins else None


def _popularity(store: Store, run: RunRecord) -> RunRecord | None:
    runs = store.list_runs(dataset_id=run.dataset_id, role=Role.POPULARITY, status=Status.SUCCEEDED)
    return max(runs, key=lambda r: r.id) if runs else None


def _handoff_rows(records: Sequence[LatencyRecord], token: str | None) -> list[LatencyRecord]:
    """The rows of preparation ``token`` (the newest one when None), one per runtime/batch."""
    tagged = [r for r in records if r.env.get("handoff")]
    if token is None and tagged:
        token = max(tagged, key=lambda r: r.id).env["handoff"]
    latest: dict[tuple[str, int], LatencyRecord] = {}
    for rec in tagged:
        if rec.env["handoff"] == token:
            key = (rec.runtime, rec.batch)
            if key not in latest or rec.id > latest[key].id:
                latest[key] = rec
    order = {runtime: i for i, runtime in enumerate(RUNTIMES)}
    return sorted(latest.values(), key=lambda r: (order.get(r.runtime, 99), r.batch))


def _latency_row(model: str, run_id: int, rec: LatencyRecord) -> dict[str, Any]:
    return {
        "model": model,
        "run_id": run_id,
        "runtime": rec.runtime,
        "batch": rec.batch,
        "p50_ms": rec.p50,
        "p95_ms": rec.p95,
        "p99_ms": rec.p99,
        "qps": rec.qps,
        "threads": rec.threads,
    }


def _metrics_row(
    label: str, run: RunRecord, runtime: str, split: str, results: Mapping[str, Any], k: int
) -> dict[str, Any]:
    row: dict[str, Any] = {"row": label, "run_id": run.id, "runtime": runtime, "split": split}
    for metric in CARD_METRICS:
        row[metric_key(metric, k)] = finite_or_none(results.get(metric_key(metric, k)))
    return row


def _quality_rows(
    store: Store,
    run: RunRecord,
    results: Mapping[str, Mapping[str, Any]],
    others: Mapping[str, RunRecord | None],
    k: int,
) -> list[dict[str, Any]]:
    """This run through each runtime, then the teacher, the twin and popularity (PyTorch)."""
    rows = [
        _metrics_row("this run", run, runtime, split, results[split], k)
        for runtime, split in (
            ("torch", SPLIT_TORCH),
            ("onnxruntime", SPLIT_ONNX),
            ("onnxruntime-int8", SPLIT_INT8),
        )
    ]
    for label, other in others.items():
        if other is not None:
            results = store.results(other.id, SPLIT_TORCH)
            rows.append(_metrics_row(label, other, "torch", SPLIT_TORCH, results, k))
    teacher = next((r for r in rows if r["row"] == "teacher"), None)
    teacher_ndcg = teacher[metric_key("ndcg", k)] if teacher else None
    for row in rows:
        kept = kept_fraction(row[metric_key("ndcg", k)], teacher_ndcg)
        row[kept_key(k)] = None if kept is None else 100.0 * kept
    return rows


def collect_facts(store: Store, run_id: int, *, handoff: str = "fp32", k: int = 10) -> HandoffFacts:
    """Everything the gates and the card need about run ``run_id``, from the store only."""
    if handoff not in HANDOFF_CHOICES:
        raise ConfigError(f"Hand off 'fp32' or 'int8', not {handoff!r}.")
    run = checked_run(store, run_id)
    artifact, runtime, split = HANDOFF_CHOICES[handoff]
    dataset = store.get_dataset(run.dataset_id)
    teacher = handoff_teacher(store, run)
    twin = find_twin(store, run)
    ndcg_key = metric_key("ndcg", k)
    others = {"teacher": teacher, "no-teacher twin": twin, "popularity": _popularity(store, run)}
    results = {s: store.results(run.id, s) for s in (SPLIT_TORCH, SPLIT_ONNX, SPLIT_INT8)}
    metrics = _quality_rows(store, run, results, others, k)
    ndcg_of = {row["row"]: row[ndcg_key] for row in metrics if row["run_id"] != run.id}

    own = _handoff_rows(store.latencies(run.id), None)
    token = own[0].env["handoff"] if own else None
    latency = [_latency_row("this run", run.id, r) for r in own]
    if teacher is not None and token is not None:
        latency += [
            _latency_row("teacher", teacher.id, r)
            for r in _handoff_rows(store.latencies(teacher.id), token)
        ]
    served = next((r for r in own if r.runtime == runtime and r.batch == 1), None)
    environment = (
        {key: v for key, v in own[0].env.items() if key not in ("handoff", "iters", "device")}
        if own
        else {}
    )

    artifacts = {a.path.name: a for a in store.artifacts(run.id) if a.path.name in ARTIFACT_KINDS}
    parities = store.parities(run.id)
    parity = parities[-1] if parities else None
    valid = store.results(run.id, "valid")
    twin_note = ""
    if twin is None:
        twin_note = (
            "this run was itself trained without a teacher"
            if run.role == Role.BASELINE
            else "no no-teacher twin was trained"
        )
    return HandoffFacts(
        ndcg=finite_or_none(results[split].get(ndcg_key)),
        teacher_ndcg=ndcg_of.get("teacher"),
        twin_id=twin.id if twin else None,
        twin_ndcg=ndcg_of.get("no-teacher twin"),
        p95_ms=served.p95 if served else None,
        size_bytes=artifacts[artifact].bytes if artifact in artifacts else None,
        parity_max_diff=parity.max_abs_diff if parity else None,
        topk_agreement=parity.topk_agreement if parity else None,
        k=k,
        handoff=handoff,
        twin_note=twin_note,
        teacher_note="" if teacher is not None else "this run has no finished teacher",
        run={
            "id": run.id,
            "title": run_title(run),
            "role": run.role,
            "model": run.model,
            "input_kind": MODELS[run.model].input_kind if run.model in MODELS else None,
            "teacher_run_id": run.teacher_run_id,
            "twin_run_id": twin.id if twin else None,
            "num_params": run.num_params,
            "finished": run.finished.isoformat() if run.finished else None,
            "config": run.config,
        },
        dataset={
            "id": dataset.id,
            "name": dataset.name,
            "source": dataset.source,
            "content_hash": dataset.content_hash,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_interactions": dataset.n_interactions,
            "split": dataset.split,
        },
        training={
            "train_seconds": finite_or_none(results[SPLIT_TORCH].get("train_seconds")),
            "best_epoch": finite_or_none(valid.get("best_epoch")),
            "val_ndcg@10": finite_or_none(valid.get("ndcg@10")),
        },
        metrics=tuple(metrics),
        latency=tuple(latency),
        parity=None
        if parity is None
        else {
            "max_abs_diff": parity.max_abs_diff,
            "topk_agreement": parity.topk_agreement,
            "n_users": parity.n_users,
        },
        sizes={
            "params": run.num_params,
            "fp32_weights_bytes": None if run.num_params is None else run.num_params * 4,
            "onnx_bytes": artifacts[ONNX_FILE].bytes if ONNX_FILE in artifacts else None,
            "int8_bytes": artifacts[INT8_FILE].bytes if INT8_FILE in artifacts else None,
        },
        artifacts=tuple(
            {"file": name, "kind": a.kind, "bytes": a.bytes, "sha256": a.sha256}
            for name, a in sorted(artifacts.items())
        ),
        environment=environment,
        prepared=parity.created.isoformat() if parity else None,
    )
