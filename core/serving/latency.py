"""Latency and throughput of a recommender as it would be served, on this machine.

One *request* is what serving does per call: build the model input for the requested users
(their user index, or their padded item history), score the whole catalog, exclude the
items they already have, and take the top K. PyTorch eager times
:meth:`Recommender.recommend`, the method the ONNX graph is traced from, and both runtimes
build their inputs the same way (the model's ``make_context`` and
:func:`core.ranking.history_mask`), so every runtime does the same work on the same inputs
(the same seeded sequence of users).

Percentiles come from ``time.perf_counter`` around each call (after a warm-up), never from
averages, because tail latency is what a serving team budgets for. Thread counts are fixed
and recorded: a latency number means nothing without them (``machine_info``; a
``LatencyMeasurement`` becomes a stored ``core.store.LatencyRecord`` through
``store_measurement``). These are measurements, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from core.dataset import InteractionData
from core.errors import ConfigError
from core.models import Recommender
from core.ranking import history_mask
from core.records import LatencyRecord
from core.serving.export import OnnxRecommender
from core.store import Store

RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")


@dataclass(frozen=True)
class LatencyResult:
    """Per-call latency percentiles (ms) and throughput (contexts per second)."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    batch: int
    iters: int


@dataclass(frozen=True)
class LatencyMeasurement:
    """One runtime at one batch size, as measured (``core.store.LatencyRecord`` is the
    stored row it becomes)."""

    runtime: str
    batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    threads: int
    iters: int
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What a latency number depends on: CPU, cores, library versions, threads, GPU."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "onnxruntime_providers": ort.get_available_providers(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if threads is not None:
        info["benchmark_threads"] = int(threads)
    return info


def measure_latency(
    fn: Callable[[], Any], *, warmup: int = 20, iters: int = 200, batch: int
) -> LatencyResult:
    """Time ``iters`` calls of ``fn`` (after ``warmup`` untimed ones), one timer per call.

    ``qps`` = ``batch * iters`` / the wall time of the timed loop.
    """
    if iters < 1 or warmup < 0 or batch < 1:
        raise ConfigError("Latency needs iters >= 1, warmup >= 0 and batch >= 1.")
    for _ in range(warmup):
        fn()
    times = np.empty(iters, dtype=np.float64)
    clock = time.perf_counter
    started = clock()
    for i in range(iters):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    total = clock() - started
    p50, p95, p99 = np.percentile(times * 1000.0, [50, 95, 99])
    return LatencyResult(
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        qps=batch * iters / total if total > 0 else float("inf"),
        batch=batch,
        iters=iters,
    )


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def request_users(
    data: InteractionData, batch: int, n_requests: int, seed: int = 0, stage: str = "test"
) -> list[np.ndarray]:
    """``n_requests`` seeded batches of evaluation users (with replacement)."""
    pool = data.eval_users(stage)
    if len(pool) == 0:
        pool = np.arange(data.n_users)
    rng = np.random.default_rng(seed)
    return [rng.choice(pool, size=batch, replace=True) for _ in range(n_requests)]


def _torch_request(model: Recommender, data: InteractionData, k: int, stage: str):
    device = model.device

    def request(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        context = model.make_context(data, users, stage).to(device)
        exclude = history_mask(data, users, stage, device)
        with torch.inference_mode():
            items, scores = model.recommend(context, k, exclude)
        return items.cpu().numpy(), scores.cpu().numpy()

    return request


def _onnx_request(runner: OnnxRecommender, data: InteractionData, stage: str):
    def request(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        exclude = history_mask(data, users, stage).numpy()
        return runner.run(runner.context(data, users, stage), exclude)

    return request


def benchmark_model(
    model: Recommender | None,
    onnx_path: str | Path | None,
    data: InteractionData,
    *,
    runtime: str,
    batch_sizes: Sequence[int] = (1, 256),
    threads: int = 1,
    k: int = 10,
    seed: int = 0,
    warmup: int = 20,
    iters: int = 200,
    time_budget_s: float = 5.0,
    stage: str = "test",
    providers: Sequence[str] | None = None,
) -> list[LatencyMeasurement]:
    """Latency of full requests (see the module docstring) at each batch size.

    ``runtime`` "torch" runs ``model`` eagerly (eval + inference_mode, ``threads`` intra-op
    threads, restored afterwards); "onnxruntime" / "onnxruntime-int8" run ``onnx_path``
    with ``threads`` intra-op threads. Every runtime gets the same seeded users. Large
    batches are slow per call, so the number of timed calls is cut to fit
    ``time_budget_s`` (never below 10); the record says how many were timed.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"Unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    records: list[LatencyMeasurement] = []
    with torch_threads(threads):
        if runtime == "torch":
            if model is None:
                raise ConfigError("The torch runtime needs the PyTorch model.")
            was_training = model.training
            model.eval()
            request = _torch_request(model, data, k, stage)
            device = str(model.device)
        else:
            if onnx_path is None:
                raise ConfigError(f"The {runtime} runtime needs an ONNX file.")
            was_training = None
            runner = OnnxRecommender(onnx_path, threads=threads, providers=providers)
            request = _onnx_request(runner, data, stage)
            device = runner.session.get_providers()[0]
        try:
            for batch in batch_sizes:
                r = _measure_batch(request, data, batch, seed, stage, warmup, iters, time_budget_s)
                records.append(
                    LatencyMeasurement(runtime=runtime, threads=threads, device=device, **asdict(r))
                )
        finally:
            if was_training is not None:
                model.train(was_training)
    return records


def _measure_batch(
    request: Callable[[np.ndarray], Any],
    data: InteractionData,
    batch: int,
    seed: int,
    stage: str,
    warmup: int,
    iters: int,
    time_budget_s: float,
) -> LatencyResult:
    """Probe the per-call cost, size the run to the time budget, then measure."""
    probe = request_users(data, batch, 3, seed + 1, stage)
    t0 = time.perf_counter()
    for users in probe:
        request(users)
    per_call = (time.perf_counter() - t0) / len(probe)
    n_iters = int(max(10, min(iters, time_budget_s / max(per_call, 1e-9))))
    n_warm = int(min(warmup, max(3, n_iters // 5)))
    requests = request_users(data, batch, n_warm + n_iters, seed, stage)
    position = iter(range(len(requests)))

    def call() -> None:
        request(requests[next(position)])

    return measure_latency(call, warmup=n_warm, iters=n_iters, batch=batch)


def store_measurement(
    store: Store, run_id: int, measured: LatencyMeasurement, env: Mapping[str, Any]
) -> LatencyRecord:
    """Write one measurement to the store's latency table.

    ``env`` says what the numbers depend on (``machine_info``); the row's own timed-call
    count and device are added to it.
    """
    return store.add_latency(
        run_id,
        measured.runtime,
        measured.batch,
        measured.p50_ms,
        measured.p95_ms,
        measured.p99_ms,
        measured.qps,
        measured.threads,
        {**env, "iters": measured.iters, "device": measured.device},
    )
