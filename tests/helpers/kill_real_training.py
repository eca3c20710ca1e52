"""A stand-in app server training real models, for the SIGKILL test in tests/test_faults.py.

It opens the store named by DISTILLERY_HOME, registers the tiny demo shop and runs the
app's own job manager and `training_runner` with two workers:

    FINISHED <id>   a small MF model has trained and succeeded (checkpoint on disk)
    QUEUED <id>     a popularity run waiting behind the two busy workers (it stays queued
                    in the store through the kill, for the next process to run)
    RUNNING <id>    a long MF run has stored at least one epoch and is still training
    SAVING <id>     another run has written its checkpoint under the temporary name and
                    stops there (as if the disk were slow); kill now

Then it waits forever; the test kills it with SIGKILL. Its job manager holds leases of
only ``LEASE_S`` seconds, so the test need not wait long for them to run out. Run as
``python -m tests.helpers.kill_real_training`` from the repository root.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace

from core.ingestion.registry import register_dataset
from core.job_context import JobContext, JobOutcome
from core.jobs import JobManager
from core.models import ModelConfig, Recommender
from core.pipeline import RunSpec, load_demo_dataset, popularity_spec
from core.runner import submit_run, training_runner
from core.store import Store
from core.train import TrainConfig

TINY_SCALE = 0.05
LEASE_S = 1.0
QUICK = RunSpec(
    name="quick-mf",
    role="teacher",
    model=ModelConfig(family="mf", dim=8),
    train=TrainConfig(epochs=1, batch_size=512),
)
LONG = replace(QUICK, name="long-mf", train=TrainConfig(epochs=500, batch_size=64, patience=500))
STUCK = replace(QUICK, name="stuck-in-save")

_local = threading.local()
_original_save = Recommender.save
saving_printed = threading.Event()
_print_lock = threading.Lock()


def say(line: str) -> None:
    # Whole lines only: the main thread and a worker both report milestones.
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _save(self: Recommender, path) -> None:
    _original_save(self, path)
    if getattr(_local, "stuck", False):
        say(f"SAVING {_local.run_id}")
        saving_printed.set()
        threading.Event().wait()  # until the test kills this process


def runner(ctx: JobContext) -> JobOutcome:
    _local.stuck = ctx.spec.name == STUCK.name
    _local.run_id = ctx.run_id
    return training_runner(ctx)


def main() -> None:
    Recommender.save = _save  # type: ignore[method-assign]
    store = Store()
    dataset = register_dataset(store, load_demo_dataset(scale=TINY_SCALE), source="demo shop")
    manager = JobManager(store, runner, workers=2, lease_s=LEASE_S)
    quick = submit_run(manager, dataset.id, QUICK)
    if manager.wait(quick, timeout=60) != "succeeded":
        raise SystemExit(f"the quick run failed: {store.get_run(quick).error}")
    say(f"FINISHED {quick}")
    long = submit_run(manager, dataset.id, LONG)
    submit_run(manager, dataset.id, STUCK)
    queued = submit_run(manager, dataset.id, popularity_spec())
    say(f"QUEUED {queued}")
    while not store.epochs(long):
        time.sleep(0.02)
    say(f"RUNNING {long}")
    saving_printed.wait()
    threading.Event().wait()


if __name__ == "__main__":
    main()
