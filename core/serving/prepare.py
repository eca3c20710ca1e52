"""Preparing a trained student for handoff: export, check and time it, and store every number.

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

Everything after that reads the store only (:mod:`core.serving.facts`, ``gates``, ``card``
and ``bundle``), so every number in a card or a bundle is one that the store holds.

This module also names what a handoff consists of: its files, its result splits and the two
precisions that can be handed off. No Streamlit here. Preparing takes seconds to tens of
seconds (two ONNX exports and the timing loops); the page runs it synchronously on an
explicit click. One preparation runs at a time per process: overlapping timing loops would
measure each other.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import paths
from core.enums import Role, Status
from core.errors import ConfigError
from core.files import file_sha256
from core.ingestion.registry import load_dataset
from core.records import LatencyRecord, RunRecord, metric_key
from core.runner import run_model
from core.serving.export import (
    ExportInfo,
    OnnxRecommender,
    evaluate_onnx,
    export_onnx,
    quantize_int8,
    write_item_map,
)
from core.serving.latency import RUNTIMES, benchmark_model, machine_info, store_measurement
from core.serving.parity import ParityResult, check_parity
from core.store import Store

ONNX_FILE, INT8_FILE, ITEM_MAP_FILE = "model.onnx", "model.int8.onnx", "item_map.csv"
ARTIFACT_KINDS = {ONNX_FILE: "onnx", INT8_FILE: "onnx-int8", ITEM_MAP_FILE: "item-map"}

# Split labels of the onnxruntime evaluations (PyTorch's own stay under "test").
SPLIT_TORCH, SPLIT_ONNX, SPLIT_INT8 = "test", "test-onnx", "test-int8"
# What can be handed off: precision -> (file, latency runtime, results split).
HANDOFF_CHOICES: dict[str, tuple[str, str, str]] = {
    "fp32": (ONNX_FILE, "onnxruntime", SPLIT_ONNX),
    "int8": (INT8_FILE, "onnxruntime-int8", SPLIT_INT8),
}
_PREPARE_LOCK = threading.Lock()

Progress = Callable[[str, float], None]


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
    runs = store.list_runs(role=(Role.STUDENT, Role.BASELINE), status=Status.SUCCEEDED)
    return sorted(runs, key=lambda r: -r.id)


def checked_run(store: Store, run_id: int) -> RunRecord:
    """Run ``run_id`` if it can be handed off; else a ``ConfigError`` saying why not."""
    run = store.get_run(run_id)
    if run.status != Status.SUCCEEDED:
        raise ConfigError(
            f"Run #{run.id} has not succeeded (it is {run.status}); only a finished run can be handed off."
        )
    if run.role == "popularity":
        raise ConfigError(
            "The popularity baseline is a reference, not a model to hand off; pick a student."
        )
    return run


def handoff_teacher(store: Store, run: RunRecord) -> RunRecord | None:
    """The run's teacher, when it has one that finished."""
    if run.teacher_run_id is None:
        return None
    teacher = store.get_run(run.teacher_run_id)
    return teacher if teacher.status == Status.SUCCEEDED else None


def _record_artifact(store: Store, run_id: int, path: Path, sha256: str | None = None) -> None:
    store.add_artifact(
        run_id, ARTIFACT_KINDS[path.name], path, path.stat().st_size, sha256 or file_sha256(path)
    )


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
    ``iters`` / ``time_budget_s`` bound each timing loop (``core.serving.latency``).
    Idempotent: files are replaced atomically, onnxruntime results replaced, and fresh
    latency and parity rows added. Raises ``ConfigError`` for runs that cannot be handed off.
    """
    report = progress or (lambda _message, _fraction: None)
    started = time.perf_counter()
    with _PREPARE_LOCK:
        run = checked_run(store, run_id)
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
            evaluations[split] = {metric_key(m, at): v for m, at, v in rows}

        token = uuid.uuid4().hex[:12]
        env = machine_info(threads) | {"handoff": token}
        timing = {"threads": threads, "k": k, "iters": iters, "time_budget_s": time_budget_s}
        sources = {"torch": None, "onnxruntime": onnx_info.path, "onnxruntime-int8": int8_info.path}
        stored: list[LatencyRecord] = []
        for step, runtime in enumerate(RUNTIMES):
            report(f"timing {runtime}", 0.55 + 0.1 * step)
            batches = (1, large_batch)
            for measured in benchmark_model(
                model, sources[runtime], data, runtime=runtime, batch_sizes=batches, **timing
            ):
                stored.append(store_measurement(store, run.id, measured, env))

        teacher_latency = None
        teacher = handoff_teacher(store, run)
        if teacher is not None:
            report("exporting and timing the teacher", 0.85)
            path = _teacher_onnx(store, teacher, k)
            (measured,) = benchmark_model(
                None, path, data, runtime="onnxruntime", batch_sizes=(1,), **timing
            )
            teacher_latency = store_measurement(store, teacher.id, measured, env)
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
