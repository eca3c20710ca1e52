"""The headless worker: ``python -m core worker`` serves the run queue without a browser.

What a GPU box runs. It opens the shared run store (``DISTILLERY_DB_URL``, the same one
the app processes use), claims queued runs one at a time per thread (each run executes
exactly once, whichever processes share the store; see `core.leases`), trains them with
the app's own `core.runner.training_runner` and writes status, epochs, progress, metrics
and checkpoints to the store and the data directory, where every app process finds them.
Run plans need nothing more: when a worker's run ends, the store itself queues (or ends)
the runs of its plan that wait for it, so a demo started in the browser finishes here.

    python -m core worker                  serve until SIGTERM / Ctrl-C
    python -m core worker --max-runs 3     stop after three runs
    python -m core worker --device cuda    train every run on the GPU

Stopping: SIGTERM (or Ctrl-C) makes the worker take nothing more from the queue; its
running run stops at its next cancel check (between batches), ends ``interrupted`` with its
partial files removed (finished files are only ever renamed into place, so nothing is left
half-written), and the process exits 0. A second signal stops it at once; the run's lease
then runs out and another process marks it interrupted. A worker that dies (SIGKILL, power
loss) is handled the same way: its leases stop being renewed and run out.

Artifacts (checkpoints, ONNX files, bundles) live in the data directory (``DISTILLERY_HOME``)
and the store records them relative to it. Every process that shares a store must see the
same data directory: on one machine, the same ``DISTILLERY_HOME``; across machines, one
shared volume (NFS or similar) mounted as ``DISTILLERY_HOME`` on each. A worker only loads
a teacher checkpoint that the store lists as that run's artifact inside the data directory.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

from core.errors import ConfigError
from core.job_context import JobContext, JobOutcome, Runner
from core.jobs import LEASE_S, JobManager
from core.process_backend import default_backend
from core.store import Store

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
_POLL_S = 0.5  # how often the main thread looks at the stop flag and the workers


def on_device(runner: Runner, device: str | None) -> Runner:
    """``runner`` with every run's training device replaced by ``device`` (None: as stored).

    Only what the runner sees changes; the stored config keeps what was submitted.
    """
    if device is None:
        return runner
    if device not in DEVICES:
        raise ConfigError(f"Device must be one of {', '.join(DEVICES)}; got {device!r}.")

    def run_on_device(ctx: JobContext) -> JobOutcome | None:
        config: dict[str, Any] = dict(ctx.spec.config)
        if isinstance(config.get("train"), dict):
            config["train"] = {**config["train"], "device": device}
        ctx.spec = replace(ctx.spec, config=config)
        return runner(ctx)

    return run_on_device


def check_device(device: str | None) -> None:
    """Refuse to start on a device this machine does not have (one sentence, no traceback)."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "The worker was asked to train on CUDA, but no GPU is visible on this "
                "machine; start it with --device cpu or auto, or on the GPU box."
            )


def serve(
    store: Store,
    runner: Runner,
    stop: threading.Event,
    *,
    threads: int = 1,
    max_runs: int | None = None,
    lease_s: float = LEASE_S,
) -> Counter[str]:
    """Serve the queue until ``stop`` is set or ``max_runs`` runs have ended; returns how
    the runs this worker executed ended (``{"succeeded": 2, ...}``)."""
    if threads < 1:
        raise ConfigError("A worker needs at least one thread.")
    if max_runs is not None and max_runs < 1:
        raise ConfigError("--max-runs must be at least 1.")
    manager = JobManager(
        store,
        runner,
        workers=threads,
        max_runs=max_runs,
        lease_s=lease_s,
        backend=default_backend(),
    )
    log.info("worker %s serving %s with %d thread(s)", manager.owner, store.url, threads)
    try:
        while not stop.wait(_POLL_S):
            if manager.join(timeout=0):  # max_runs reached: every thread has stopped
                break
    finally:
        if stop.is_set():
            log.info("stopping: running runs end as interrupted, nothing more is taken")
        manager.shutdown(wait=True, interrupt=stop.is_set())
    return Counter(r.status for r in store.list_runs() if r.owner == manager.owner)


def run_worker(
    *,
    max_runs: int | None = None,
    device: str | None = None,
    threads: int = 1,
    lease_s: float | None = None,
) -> int:
    """``python -m core worker``: serve until SIGTERM/SIGINT or ``max_runs``; exit status."""
    from core.runner import training_runner

    check_device(device)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in handled}

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()
        for sig in handled:  # a second signal stops the process at once
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else previous[sig])

    for sig in handled:
        signal.signal(sig, request_stop)
    try:
        with Store() as store:
            ended = serve(
                store,
                on_device(training_runner, device),
                stop,
                threads=threads,
                max_runs=max_runs,
                lease_s=lease_s or LEASE_S,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(ended.items())) or "none"
    print(f"worker served {sum(ended.values())} run(s): {summary}", flush=True)
    return 0
