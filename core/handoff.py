"""Handing a trained student to a serving team: export, checks, gates, model card, bundle.

``prepare_handoff`` does the measuring, and writes everything it measures to the store:

- ``model.onnx`` (fp32, top-K in the graph), ``model.int8.onnx`` (dynamic int8) and
  ``item_map.csv`` in the run's folder, recorded as artifacts with their sha256, and the
  run's ``onnx_path``;
- a parity check of the fp32 graph against PyTorch (``store.add_parity``);
- the full-ranking test evaluation *through onnxruntime*, stored under their own split
  labels, ``"test-onnx"`` (fp32) and ``"test-int8"``, with the very same metric keys as
  PyTorch's ``"test"`` split (``ndcg@10``, ...), which they never overwrite;
- latency rows for ``torch``, ``onnxruntime`` and ``onnxruntime-int8`` at batch 1 and a
  larger batch, and the teacher's onnxruntime batch-1 latency (its ONNX export is reused
  when already there), so that the student/teacher ratio is measured, not estimated. The
  rows of one preparation share an ``env["handoff"]`` token, so the card shows one
  coherent set even when other measurements (the Compare page's) were stored since.

Everything after that reads the store only: ``collect_facts`` gathers the numbers of one
run (for the artifact chosen to be handed off), ``evaluate_gates`` turns them into
pass/fail checks against editable thresholds, ``model_card`` renders them as Markdown and
JSON, and ``write_bundle`` zips the files for download. So every number in a card or a
bundle is one that the store holds.

No Streamlit here. Preparing takes seconds to tens of seconds (two ONNX exports and the
timing loops); the page runs it synchronously on an explicit click. One preparation runs
at a time per process: overlapping timing loops would measure each other.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core import paths
from core.compare import md_escape, run_title
from core.errors import ConfigError
from core.export import (
    ExportInfo,
    OnnxRecommender,
    ParityResult,
    atomic_path,
    check_parity,
    evaluate_onnx,
    export_onnx,
    file_sha256,
    quantize_int8,
    write_item_map,
)
from core.latency import RUNTIMES, benchmark_model, machine_info
from core.latency import LatencyRecord as Measurement
from core.models import MODELS
from core.registry import load_dataset
from core.runner import run_model
from core.store import LatencyRecord, RunRecord, Store, jsonable

ONNX_FILE, INT8_FILE, ITEM_MAP_FILE = "model.onnx", "model.int8.onnx", "item_map.csv"
CARD_MD, CARD_JSON, METRICS_JSON = "model_card.md", "model_card.json", "metrics.json"
BUNDLE_FILES = (ONNX_FILE, INT8_FILE, ITEM_MAP_FILE, CARD_MD, CARD_JSON, METRICS_JSON)
ARTIFACT_KINDS = {ONNX_FILE: "onnx", INT8_FILE: "onnx-int8", ITEM_MAP_FILE: "item-map"}

# Split labels of the onnxruntime evaluations (PyTorch's own stay under "test").
SPLIT_TORCH, SPLIT_ONNX, SPLIT_INT8 = "test", "test-onnx", "test-int8"
# What can be handed off: precision -> (file, latency runtime, results split).
HANDOFF_CHOICES: dict[str, tuple[str, str, str]] = {
    "fp32": (ONNX_FILE, "onnxruntime", SPLIT_ONNX),
    "int8": (INT8_FILE, "onnxruntime-int8", SPLIT_INT8),
}
CARD_METRICS = ("ndcg", "hr", "mrr", "coverage", "tail_recall")
MB = 1_000_000  # sizes are decimal megabytes, as file browsers show them
CARD_SCHEMA = "distillery.model_card/1"
# Fixed zip entry timestamp: the same files make the same bundle bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_PREPARE_LOCK = threading.Lock()

Progress = Callable[[str, float], None]


# --------------------------------------------------------------------------- preparation
@dataclass(frozen=True)
class HandoffResult:
    """What one ``prepare_handoff`` call wrote (all of it is also in the store)."""

    run_id: int
    token: str  # ``env["handoff"]`` of this preparation's latency rows
    onnx: ExportInfo
    int8: ExportInfo
    item_map: Path
    parity: ParityResult
    onnx_metrics: dict[str, float]
    int8_metrics: dict[str, float]
    latencies: tuple[LatencyRecord, ...]  # this run's rows, in measurement order
    teacher_latency: LatencyRecord | None  # the teacher's onnxruntime batch 1
    seconds: float


def handoff_candidates(store: Store) -> list[RunRecord]:
    """Succeeded students and no-teacher baselines, newest first (what the page offers)."""
    runs = store.list_runs(role=("student", "baseline"), status="succeeded")
    return sorted(runs, key=lambda r: -r.id)


def _checked_run(store: Store, run_id: int) -> RunRecord:
    run = store.get_run(run_id)
    if run.status != "succeeded":
        raise ConfigError(
            f"Run #{run.id} has not succeeded (it is {run.status}); only a finished run can be handed off."
        )
    if run.role == "popularity":
        raise ConfigError(
            "The popularity baseline is a reference, not a model to hand off; pick a student."
        )
    return run


def _record_artifact(store: Store, run_id: int, path: Path, sha256: str | None = None) -> None:
    store.add_artifact(
        run_id,
        ARTIFACT_KINDS[path.name],
        path,
        path.stat().st_size,
        sha256 or file_sha256(path),
    )


def _metric_values(rows: Sequence[tuple[str, int, float]]) -> dict[str, float]:
    return {f"{m}@{k}" if k else m: v for m, k, v in rows}


def _teacher_onnx(store: Store, teacher: RunRecord, k: int) -> Path:
    """The teacher's ONNX file: reused when it is there with the same K, else exported."""
    path = paths.run_dir(teacher.id) / ONNX_FILE
    model = run_model(store, teacher)
    if path.exists():
        with contextlib.suppress(Exception):  # unreadable or foreign: export it again
            existing = OnnxRecommender(path)
            if existing.k == min(k, model.n_items) and existing.n_items == model.n_items:
                return path
    info = export_onnx(model, path, k=k)
    _record_artifact(store, teacher.id, path, info.sha256)
    store.update_run(teacher.id, onnx_path=path)
    return path


def prepare_handoff(
    store: Store,
    run_id: int,
    *,
    k: int = 10,
    threads: int = 1,
    parity_users: int = 256,
    large_batch: int = 256,
    iters: int = 200,
    time_budget_s: float = 2.0,
    progress: Progress | None = None,
) -> HandoffResult:
    """Export, quantize, check and time run ``run_id`` (see the module docstring).

    ``threads`` intra-op threads for every runtime (recorded with each latency row);
    ``iters`` / ``time_budget_s`` bound each timing loop (``core.latency``). Idempotent:
    files are replaced atomically, onnxruntime results replaced, and fresh latency and
    parity rows added. Raises ``ConfigError`` for runs that cannot be handed off.
    """
    report = progress or (lambda _message, _fraction: None)
    started = time.perf_counter()
    with _PREPARE_LOCK:
        run = _checked_run(store, run_id)
        report("loading the model and the dataset", 0.0)
        data = load_dataset(store, run.dataset_id)
        model = run_model(store, run)
        folder = paths.run_dir(run.id)
        ks = tuple(x for x in (10, 20) if x <= k) or (k,)

        report("exporting to ONNX", 0.05)
        onnx_info = export_onnx(model, folder / ONNX_FILE, k=k)
        report("quantizing to int8", 0.4)
        int8_info = quantize_int8(onnx_info.path, folder / INT8_FILE)
        item_map = write_item_map(data, folder / ITEM_MAP_FILE)
        _record_artifact(store, run.id, Path(onnx_info.path), onnx_info.sha256)
        _record_artifact(store, run.id, Path(int8_info.path), int8_info.sha256)
        _record_artifact(store, run.id, item_map)
        store.update_run(run.id, onnx_path=onnx_info.path)

        report("checking parity with PyTorch", 0.45)
        parity = check_parity(model, onnx_info.path, data, n_users=parity_users, k=k)
        store.add_parity(run.id, parity.max_abs_diff, parity.topk_agreement, parity.n_users)

        report("evaluating through onnxruntime", 0.5)
        evaluations: dict[str, dict[str, float]] = {}
        for split, info in ((SPLIT_ONNX, onnx_info), (SPLIT_INT8, int8_info)):
            rows = evaluate_onnx(info.path, None, data, "test", ks=ks, threads=threads).to_rows()
            store.set_results(run.id, split, rows)
            evaluations[split] = _metric_values(rows)

        token = uuid.uuid4().hex[:12]
        env = machine_info(threads) | {"handoff": token}
        sources = {"torch": None, "onnxruntime": onnx_info.path, "onnxruntime-int8": int8_info.path}
        stored: list[LatencyRecord] = []
        for step, runtime in enumerate(RUNTIMES):
            report(f"timing {runtime}", 0.55 + 0.1 * step)
            for rec in benchmark_model(
                model,
                sources[runtime],
                data,
                runtime=runtime,
                batch_sizes=(1, large_batch),
                threads=threads,
                k=k,
                iters=iters,
                time_budget_s=time_budget_s,
            ):
                stored.append(_store_latency(store, run.id, rec, env))

        teacher_latency = None
        teacher = _handoff_teacher(store, run)
        if teacher is not None:
            report("exporting and timing the teacher", 0.85)
            path = _teacher_onnx(store, teacher, k)
            (rec,) = benchmark_model(
                None,
                path,
                data,
                runtime="onnxruntime",
                batch_sizes=(1,),
                threads=threads,
                k=k,
                iters=iters,
                time_budget_s=time_budget_s,
            )
            teacher_latency = _store_latency(store, teacher.id, rec, env)
        report("done", 1.0)
    return HandoffResult(
        run_id=run.id,
        token=token,
        onnx=onnx_info,
        int8=int8_info,
        item_map=item_map,
        parity=parity,
        onnx_metrics=evaluations[SPLIT_ONNX],
        int8_metrics=evaluations[SPLIT_INT8],
        latencies=tuple(stored),
        teacher_latency=teacher_latency,
        seconds=time.perf_counter() - started,
    )


def _store_latency(
    store: Store, run_id: int, rec: Measurement, env: Mapping[str, Any]
) -> LatencyRecord:
    return store.add_latency(
        run_id,
        rec.runtime,
        rec.batch,
        rec.p50_ms,
        rec.p95_ms,
        rec.p99_ms,
        rec.qps,
        rec.threads,
        {**env, "iters": rec.iters, "device": rec.device},
    )


def _handoff_teacher(store: Store, run: RunRecord) -> RunRecord | None:
    if run.teacher_run_id is None:
        return None
    teacher = store.get_run(run.teacher_run_id)
    return teacher if teacher.status == "succeeded" else None


# --------------------------------------------------------------------------- facts
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


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def find_twin(store: Store, run: RunRecord) -> RunRecord | None:
    """The newest succeeded no-teacher baseline with the same teacher and model config."""
    if run.role != "student" or run.teacher_run_id is None:
        return None
    twins = [
        r
        for r in store.list_runs(
            dataset_id=run.dataset_id,
            role="baseline",
            status="succeeded",
            teacher_run_id=run.teacher_run_id,
        )
        if r.config.get("model") == run.config.get("model")
    ]
    return max(twins, key=lambda r: r.id) if twins else None


def _popularity(store: Store, run: RunRecord) -> RunRecord | None:
    runs = store.list_runs(dataset_id=run.dataset_id, role="popularity", status="succeeded")
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
        row[f"{metric}@{k}"] = _finite(results.get(f"{metric}@{k}"))
    return row


def collect_facts(store: Store, run_id: int, *, handoff: str = "fp32", k: int = 10) -> HandoffFacts:
    """Everything the gates and the card need about run ``run_id``, from the store only."""
    if handoff not in HANDOFF_CHOICES:
        raise ConfigError(f"Hand off 'fp32' or 'int8', not {handoff!r}.")
    run = _checked_run(store, run_id)
    artifact, runtime, split = HANDOFF_CHOICES[handoff]
    dataset = store.get_dataset(run.dataset_id)
    teacher = _handoff_teacher(store, run)
    twin = find_twin(store, run)
    popularity = _popularity(store, run)
    ndcg_key = f"ndcg@{k}"

    results = {s: store.results(run.id, s) for s in (SPLIT_TORCH, SPLIT_ONNX, SPLIT_INT8)}
    metrics = [
        _metrics_row("this run", run, "torch", SPLIT_TORCH, results[SPLIT_TORCH], k),
        _metrics_row("this run", run, "onnxruntime", SPLIT_ONNX, results[SPLIT_ONNX], k),
        _metrics_row("this run", run, "onnxruntime-int8", SPLIT_INT8, results[SPLIT_INT8], k),
    ]
    teacher_ndcg = None
    for label, other in (
        ("teacher", teacher),
        ("no-teacher twin", twin),
        ("popularity", popularity),
    ):
        if other is not None:
            other_results = store.results(other.id, SPLIT_TORCH)
            metrics.append(_metrics_row(label, other, "torch", SPLIT_TORCH, other_results, k))
            if label == "teacher":
                teacher_ndcg = _finite(other_results.get(ndcg_key))
    for row in metrics:
        value = row[ndcg_key]
        row[f"ndcg@{k} kept %"] = (
            100.0 * value / teacher_ndcg if value is not None and teacher_ndcg else None
        )

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
    train_results = results[SPLIT_TORCH]
    twin_note = ""
    if twin is None:
        twin_note = (
            "this run was itself trained without a teacher"
            if run.role == "baseline"
            else "no no-teacher twin was trained"
        )
    return HandoffFacts(
        ndcg=_finite(results[split].get(ndcg_key)),
        teacher_ndcg=teacher_ndcg,
        twin_id=twin.id if twin else None,
        twin_ndcg=_finite(store.results(twin.id, SPLIT_TORCH).get(ndcg_key)) if twin else None,
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
            "train_seconds": _finite(train_results.get("train_seconds")),
            "best_epoch": _finite(store.results(run.id, "valid").get("best_epoch")),
            "val_ndcg@10": _finite(store.results(run.id, "valid").get("ndcg@10")),
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


# --------------------------------------------------------------------------- gates
@dataclass(frozen=True)
class Gates:
    """Handoff thresholds (all editable on the page).

    ``min_kept`` is a fraction (0.95 = 95% of the teacher's NDCG@K); sizes are decimal MB.
    """

    min_kept: float = 0.95
    must_beat_baseline: bool = True
    max_p95_ms: float = 10.0
    max_size_mb: float = 50.0
    max_parity_diff: float = 1e-4
    min_topk_agreement: float = 0.99


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    measured: float | None
    threshold: float | None
    sentence: str

    @property
    def mark(self) -> str:
        return "✅" if self.passed else "❌"


def _at_least(value: float, threshold: float) -> bool:
    # Exactly at the threshold passes, also when float arithmetic lands one ulp below it.
    return value >= threshold or math.isclose(value, threshold, rel_tol=1e-12, abs_tol=1e-15)


def _at_most(value: float, threshold: float) -> bool:
    return value <= threshold or math.isclose(value, threshold, rel_tol=1e-12, abs_tol=1e-15)


NOT_MEASURED = "not measured yet: press Prepare handoff"


def evaluate_gates(facts: HandoffFacts, gates: Gates) -> list[GateResult]:
    """Each gate's verdict with one sentence (a missing measurement fails, saying so).

    ``>=``/``<=`` gates pass exactly at their threshold; "beats the twin" is strict.
    The parity gates judge the fp32 graph (int8 scores differ by design; its quality is
    judged by the NDCG gates, which use the handed-off artifact's onnxruntime NDCG).
    """
    k, out = facts.k, []

    def add(name: str, measured: float | None, threshold: float | None, ok: bool, text: str):
        out.append(GateResult(name, bool(ok), measured, threshold, text))

    if facts.teacher_ndcg is None or facts.teacher_ndcg <= 0:
        why = facts.teacher_note or "the teacher has no positive test NDCG"
        add("quality_kept", None, gates.min_kept, False, f"Cannot compare with a teacher: {why}.")
    elif facts.ndcg is None:
        add("quality_kept", None, gates.min_kept, False, f"Quality kept: {NOT_MEASURED}.")
    else:
        kept = facts.ndcg / facts.teacher_ndcg
        add(
            "quality_kept",
            kept,
            gates.min_kept,
            _at_least(kept, gates.min_kept),
            f"Keeps {100 * kept:.1f}% of the teacher's NDCG@{k} ({facts.ndcg:.4f} vs "
            f"{facts.teacher_ndcg:.4f}; needs at least {100 * gates.min_kept:.1f}%).",
        )

    if gates.must_beat_baseline:
        if facts.twin_id is None:
            why = facts.twin_note or "no no-teacher twin was trained"
            add("beats_twin", None, None, False, f"Cannot show that the teacher helps: {why}.")
        elif facts.ndcg is None or facts.twin_ndcg is None:
            add("beats_twin", None, facts.twin_ndcg, False, f"Beats its twin: {NOT_MEASURED}.")
        else:
            ok = facts.ndcg > facts.twin_ndcg
            add(
                "beats_twin",
                facts.ndcg,
                facts.twin_ndcg,
                ok,
                f"NDCG@{k} {facts.ndcg:.4f} {'beats' if ok else 'does not beat'} the "
                f"no-teacher twin #{facts.twin_id} ({facts.twin_ndcg:.4f}; it must be higher).",
            )

    if facts.p95_ms is None:
        add("p95_latency", None, gates.max_p95_ms, False, f"p95 latency: {NOT_MEASURED}.")
    else:
        add(
            "p95_latency",
            facts.p95_ms,
            gates.max_p95_ms,
            _at_most(facts.p95_ms, gates.max_p95_ms),
            f"p95 latency of single requests in {facts.runtime} is {facts.p95_ms:.3f} ms "
            f"(needs at most {gates.max_p95_ms:g} ms).",
        )

    if facts.size_bytes is None:
        add("size", None, gates.max_size_mb, False, f"Size: {NOT_MEASURED}.")
    else:
        size_mb = facts.size_bytes / MB
        add(
            "size",
            size_mb,
            gates.max_size_mb,
            _at_most(size_mb, gates.max_size_mb),
            f"{facts.artifact} is {size_mb:.3f} MB (needs at most {gates.max_size_mb:g} MB).",
        )

    if facts.parity_max_diff is None:
        add("parity", None, gates.max_parity_diff, False, f"Parity: {NOT_MEASURED}.")
    else:
        add(
            "parity",
            facts.parity_max_diff,
            gates.max_parity_diff,
            _at_most(facts.parity_max_diff, gates.max_parity_diff),
            f"The fp32 ONNX top-{k} scores differ from PyTorch's by at most "
            f"{facts.parity_max_diff:.2e} (tolerance {gates.max_parity_diff:.0e}).",
        )

    if facts.topk_agreement is None:
        add("topk_agreement", None, gates.min_topk_agreement, False, f"Agreement: {NOT_MEASURED}.")
    else:
        add(
            "topk_agreement",
            facts.topk_agreement,
            gates.min_topk_agreement,
            _at_least(facts.topk_agreement, gates.min_topk_agreement),
            f"onnxruntime agrees with PyTorch on {100 * facts.topk_agreement:.2f}% of the "
            f"top-{k} items (needs at least {100 * gates.min_topk_agreement:.2f}%).",
        )
    return out


# --------------------------------------------------------------------------- model card
def known_limits(facts: HandoffFacts, escape: Callable[[str], str] = str) -> list[str]:
    """A short, honest list of what the card's numbers do not show.

    ``escape`` is applied to the pieces that come from outside (dataset name, CPU name).
    """
    env, data = facts.environment, facts.dataset
    threads = env.get("benchmark_threads", "?")
    split = (data.get("split") or {}).get("method", "loo")
    protocol = "leave-one-out by time" if split == "loo" else f"{split} split"
    limits = [
        f"Latency was measured on this machine only ({escape(str(env.get('cpu', 'unknown CPU')))}, "
        f"{threads} thread(s), one request at a time or batch as listed); other hardware, "
        "request batching or a busy server give other numbers.",
        f"Quality is a {protocol} full-ranking evaluation on the dataset "
        f"{escape(repr(str(data.get('name', '?'))))} only; live traffic and online metrics may differ.",
        f"The catalog is fixed at export time ({data.get('n_items', '?')} items): a new item "
        "needs a retrained model and a new export; the item map gives each index its item id.",
        f"The graph returns a fixed top {facts.k}; items already bought are excluded only "
        "when the caller passes them in the exclusion mask.",
    ]
    if facts.run.get("input_kind") == "sequence":
        limits.append(
            "Cold users: the model reads the user's recent items; a user with no history gets "
            "a generic list, so a fallback such as popularity is advised."
        )
    else:
        limits.append(
            f"Cold users: the model knows only the {data.get('n_users', '?')} users it was "
            "trained on (it takes a user index); new users need a fallback such as popularity."
        )
    if facts.parity is not None:
        limits.append(
            f"Parity and top-{facts.k} agreement were checked on {facts.parity['n_users']} "
            "sampled test users for the fp32 graph; int8 scores differ from PyTorch by design "
            "and its quality is measured separately (onnxruntime int8 row)."
        )
    return limits


def _batch1(facts: HandoffFacts, model: str, runtime: str) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in facts.latency
            if r["model"] == model and r["runtime"] == runtime and r["batch"] == 1
        ),
        None,
    )


def latency_ratios(facts: HandoffFacts) -> dict[str, float | None]:
    """p50 ratios at batch 1: teacher (onnxruntime) / this run served, and torch / onnxruntime."""
    served = _batch1(facts, "this run", facts.runtime)
    teacher = _batch1(facts, "teacher", "onnxruntime")
    torch_row = _batch1(facts, "this run", "torch")
    onnx_row = _batch1(facts, "this run", "onnxruntime")

    def ratio(a: dict | None, b: dict | None) -> float | None:
        if a is None or b is None or not b["p50_ms"]:
            return None
        return a["p50_ms"] / b["p50_ms"]

    return {
        "teacher_over_served_p50": ratio(teacher, served),
        "torch_over_onnxruntime_p50": ratio(torch_row, onnx_row),
    }


# Keys every card has (null when unknown), so hand-built or partial facts still render.
_RUN_KEYS = ("id", "title", "role", "model", "teacher_run_id", "twin_run_id", "num_params")
_DATASET_KEYS = ("name", "source", "content_hash", "n_users", "n_items", "n_interactions")
_TRAINING_KEYS = ("train_seconds", "best_epoch", "val_ndcg@10")
_SIZE_KEYS = ("params", "fp32_weights_bytes", "onnx_bytes", "int8_bytes")


def card_dict(facts: HandoffFacts, gates: Gates) -> dict[str, Any]:
    """The model card as plain JSON-ready data (non-finite numbers become null)."""
    results = evaluate_gates(facts, gates)
    card = {
        "schema": CARD_SCHEMA,
        "run": dict.fromkeys(_RUN_KEYS) | facts.run,
        "handoff": {
            "precision": facts.handoff,
            "artifact": facts.artifact,
            "runtime": facts.runtime,
            "k": facts.k,
            "prepared": facts.prepared,
            "inputs": "context int64 [B] user index, or [B, L] item history (index + 1, 0 = pad); "
            "exclude bool [B, n_items]",
            "outputs": "top_items int64 [B, K] item indices (see item_map.csv), "
            "top_scores float32 [B, K]",
        },
        "dataset": dict.fromkeys(_DATASET_KEYS) | facts.dataset,
        "training": dict.fromkeys(_TRAINING_KEYS) | facts.training,
        "metrics": list(facts.metrics),
        "latency": list(facts.latency),
        "latency_ratios": latency_ratios(facts),
        "parity": facts.parity,
        "sizes": dict.fromkeys(_SIZE_KEYS) | facts.sizes,
        "artifacts": list(facts.artifacts),
        "environment": facts.environment,
        "thresholds": asdict(gates),
        "gates": [asdict(g) for g in results],
        "all_gates_passed": all(g.passed for g in results),
        "known_limits": known_limits(facts),
    }
    return jsonable(card)


def _num(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _fenced(text: str, language: str = "") -> list[str]:
    """A code block whose fence is longer than any backtick run inside (user text in it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, text, fence]


def _card_markdown(card: dict[str, Any], facts: HandoffFacts) -> str:
    k = facts.k
    run, data, handoff = card["run"], card["dataset"], card["handoff"]
    gates = card["gates"]
    passed = sum(g["passed"] for g in gates)
    lines = [
        f"# Model card: {md_escape(run['title'] or 'untitled run')}",
        "",
        f"Handed-off artifact: `{handoff['artifact']}` ({handoff['precision']}, served with "
        f"{handoff['runtime']}), top {k} items per request. Gates passed: {passed} of {len(gates)}.",
        "",
        f"- Inputs: `{handoff['inputs']}`",
        f"- Outputs: `{handoff['outputs']}`",
        f"- Prepared: {handoff['prepared'] or 'not yet'}",
        "",
        "## Data",
        "",
        f"- Dataset: {md_escape(data['name'] or '?')} (source: {md_escape(data['source'] or '?')})",
        f"- Fingerprint (sha256 of the stored content): `{data['content_hash']}`",
        f"- {_num(data['n_users'], ',')} users, {_num(data['n_items'], ',')} items, "
        f"{_num(data['n_interactions'], ',')} interactions",
        f"- Split: `{json.dumps(data.get('split') or {}, sort_keys=True)}`",
        "",
        "## Configuration",
        "",
        f"Run #{run['id']} ({run['role']}, {md_escape(run['model'])}), "
        f"{_num(run['num_params'], ',')} parameters, teacher run "
        f"{'#' + str(run['teacher_run_id']) if run['teacher_run_id'] else '—'}, "
        f"no-teacher twin {'#' + str(run['twin_run_id']) if run['twin_run_id'] else '—'}.",
        "",
        *_fenced(json.dumps(run.get("config") or {}, indent=2, sort_keys=True), "json"),
        "",
        "## Training",
        "",
        f"- Training time: {_num(card['training']['train_seconds'], '.1f')} s; best epoch "
        f"{_num(card['training']['best_epoch'], '.0f')}; validation NDCG@10 "
        f"{_num(card['training']['val_ndcg@10'])}",
        "",
        f"## Quality (test split, full ranking, K={k})",
        "",
    ]
    headers = ["model", "run", "runtime", *(f"{m}@{k}" for m in CARD_METRICS), "NDCG kept %"]
    rows = [
        [
            md_escape(m["row"]),
            f"#{m['run_id']}",
            m["runtime"],
            *(_num(m[f"{metric}@{k}"]) for metric in CARD_METRICS),
            _num(m[f"ndcg@{k} kept %"], ".1f"),
        ]
        for m in card["metrics"]
    ]
    lines += [*_table(headers, rows), "", "## Latency", ""]
    if card["latency"]:
        rows = [
            [
                r["model"],
                r["runtime"],
                str(r["batch"]),
                _num(r["p50_ms"], ".3f"),
                _num(r["p95_ms"], ".3f"),
                _num(r["p99_ms"], ".3f"),
                _num(r["qps"], ",.0f"),
                str(r["threads"]),
            ]
            for r in card["latency"]
        ]
        headers = [
            "model",
            "runtime",
            "batch",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "requests/s",
            "threads",
        ]
        lines += _table(headers, rows)
        ratios = card["latency_ratios"]
        lines += [
            "",
            f"Teacher p50 / this run's p50 (batch 1): {_num(ratios['teacher_over_served_p50'], '.1f')}x; "
            f"PyTorch / onnxruntime p50: {_num(ratios['torch_over_onnxruntime_p50'], '.2f')}x.",
        ]
    else:
        lines.append("Not measured yet.")
    sizes, parity = card["sizes"], card["parity"]
    lines += [
        "",
        "## Sizes and parity",
        "",
        f"- Parameters: {_num(sizes['params'], ',')}; fp32 weights {_num(sizes['fp32_weights_bytes'], ',')} bytes",
        f"- {ONNX_FILE}: {_num(sizes['onnx_bytes'], ',')} bytes; {INT8_FILE}: {_num(sizes['int8_bytes'], ',')} bytes",
    ]
    if parity:
        lines.append(
            f"- Parity (fp32 ONNX vs PyTorch, {parity['n_users']} users): max |score diff| "
            f"{_num(parity['max_abs_diff'], '.2e')}, top-{k} agreement {_num(parity['topk_agreement'], '.4f')}"
        )
    for a in card["artifacts"]:
        lines.append(f"- `{a['file']}` sha256 `{a['sha256']}`")
    lines += ["", "## Environment", ""]
    env_rows = [
        [key, md_escape(", ".join(map(str, v)) if isinstance(v, list) else str(v))]
        for key, v in sorted(card["environment"].items())
    ]
    lines += _table(["setting", "value"], env_rows) if env_rows else ["Not measured yet."]
    lines += ["", "## Gates", ""]
    lines += [f"- {'✅' if g['passed'] else '❌'} {g['sentence']}" for g in gates]
    lines += ["", "## Known limits", ""]
    lines += [f"- {limit}" for limit in known_limits(facts, md_escape)]
    return "\n".join(lines) + "\n"


def model_card(facts: HandoffFacts, gates: Gates) -> tuple[str, dict[str, Any]]:
    """The card as (Markdown, JSON-ready dict). User text in the Markdown is escaped."""
    card = card_dict(facts, gates)
    return _card_markdown(card, facts), card


def metrics_json(store: Store, run_id: int) -> dict[str, Any]:
    """Every stored result split, latency row and parity check of the run."""
    splits: dict[str, dict[str, float | None]] = {}
    for rec in store.result_records(run_id):
        splits.setdefault(rec.split, {})[rec.key] = rec.value
    return jsonable(
        {
            "run_id": run_id,
            "results": splits,
            "latency": [
                {
                    "runtime": r.runtime,
                    "batch": r.batch,
                    "p50_ms": r.p50,
                    "p95_ms": r.p95,
                    "p99_ms": r.p99,
                    "qps": r.qps,
                    "threads": r.threads,
                    "created": r.created.isoformat(),
                }
                for r in store.latencies(run_id)
            ],
            "parity": [
                {
                    "max_abs_diff": p.max_abs_diff,
                    "topk_agreement": p.topk_agreement,
                    "n_users": p.n_users,
                    "created": p.created.isoformat(),
                }
                for p in store.parities(run_id)
            ],
        }
    )


# --------------------------------------------------------------------------- page tables
LATENCY_COLUMNS = ["model", "runtime", "batch", "p50_ms", "p95_ms", "p99_ms", "qps", "threads"]


def latency_frame(facts: HandoffFacts) -> pd.DataFrame:
    """The card's latency table (runtime x batch, this run then the teacher)."""
    return pd.DataFrame(list(facts.latency), columns=["run_id", *LATENCY_COLUMNS])[LATENCY_COLUMNS]


def quality_frame(facts: HandoffFacts) -> pd.DataFrame:
    """The card's quality table: this run through each runtime, teacher, twin, popularity."""
    k = facts.k
    columns = ["row", "run_id", "runtime", *(f"{m}@{k}" for m in CARD_METRICS)]
    frame = pd.DataFrame(list(facts.metrics), columns=[*columns, f"ndcg@{k} kept %"])
    numeric = [c for c in frame.columns if c not in ("row", "runtime", "run_id")]
    frame[numeric] = frame[numeric].astype("float64")
    return frame


def sizes_mb(facts: HandoffFacts) -> dict[str, float | None]:
    """fp32 weights, ONNX file and int8 file in decimal MB (None when unknown)."""
    sizes = facts.sizes
    keys = {"fp32 weights": "fp32_weights_bytes", ONNX_FILE: "onnx_bytes", INT8_FILE: "int8_bytes"}
    return {
        label: None if sizes.get(key) is None else sizes[key] / MB for label, key in keys.items()
    }


# --------------------------------------------------------------------------- bundle
def bundle_path(run_id: int, handoff: str = "fp32") -> Path:
    return paths.bundles_dir() / f"distillery-run-{int(run_id):06d}-{handoff}-handoff.zip"


def _add(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, payload)


def write_bundle(
    store: Store, run_id: int, *, handoff: str = "fp32", gates: Gates | None = None, k: int = 10
) -> Path:
    """Zip ``BUNDLE_FILES`` (in that order) into ``paths.bundles_dir()``, atomically.

    Needs a prepared run (``prepare_handoff``); the card is rendered from the store with
    ``gates`` (defaults when None). Entries have fixed timestamps, so the same store
    state gives the same bytes.
    """
    facts = collect_facts(store, run_id, handoff=handoff, k=k)
    files = {a.path.name: a.path for a in store.artifacts(run_id) if a.path.name in ARTIFACT_KINDS}
    missing = [
        name
        for name in (ONNX_FILE, INT8_FILE, ITEM_MAP_FILE)
        if not (name in files and files[name].exists())
    ]
    if missing or not facts.is_prepared:
        raise ConfigError(
            f"Run #{run_id} has not been prepared for handoff (missing {', '.join(missing) or 'the parity check'}); press Prepare handoff first."
        )
    markdown, card = model_card(facts, gates or Gates())
    generated = {
        CARD_MD: markdown.encode(),
        CARD_JSON: (json.dumps(card, indent=2, sort_keys=True) + "\n").encode(),
        METRICS_JSON: (
            json.dumps(metrics_json(store, run_id), indent=2, sort_keys=True) + "\n"
        ).encode(),
    }
    path = bundle_path(run_id, handoff)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in BUNDLE_FILES:
            _add(archive, name, generated[name] if name in generated else files[name].read_bytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path
