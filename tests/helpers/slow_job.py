"""A stand-in server process for the SIGKILL test in tests/test_jobs.py.

It opens the store named by DISTILLERY_HOME / DISTILLERY_DB_URL, runs one quick job to
completion, then starts a slow job that stops in the middle of writing its checkpoint
(leaving a temporary file behind) with a third job queued behind it. It prints one line
per milestone, flushed, so the test knows when to kill it:

    FINISHED <run id>    the quick job has succeeded
    QUEUED <run id>      the job waiting behind the slow one
    RUNNING <run id>     the slow job is mid-write; kill now

Run as ``python -m tests.helpers.slow_job`` from the repository root.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.job_context import JobContext, JobOutcome
from core.jobs import JobManager
from core.records import JobSpec
from core.store import Store

# Keeps the milestones in the documented order: RUNNING only after QUEUED.
queued_printed = threading.Event()


def runner(ctx: JobContext) -> JobOutcome | None:
    if ctx.spec.config.get("mode") == "quick":
        ctx.report(1, 1, 0.5, {"task": 0.5}, {"ndcg@10": 0.25}, seconds=0.01)
        ctx.write_artifact("model.bin", lambda p: p.write_bytes(b"finished"), kind="checkpoint")
        return JobOutcome(
            num_params=3,
            checkpoint_path=ctx.artifact_path("model.bin"),
            results={"test": {"ndcg@10": 0.25}},
        )

    ctx.report(1, 100, 1.0, {"task": 1.0}, {"ndcg@10": 0.1}, seconds=0.01)

    def never_finishes(path: Path) -> None:
        path.write_bytes(b"half a checkpoint")
        queued_printed.wait()
        print(f"RUNNING {ctx.run_id}", flush=True)
        threading.Event().wait()  # until the test kills this process

    ctx.write_artifact("model.bin", never_finishes, kind="checkpoint")
    return None


def main() -> None:
    store = Store()
    dataset = store.add_dataset(
        name="tiny", source="test", content_hash="sigkill", n_users=2, n_items=2, n_interactions=4
    )
    # A short lease: the test waits for it to run out after the kill.
    manager = JobManager(store, runner, workers=1, lease_s=1.0)
    quick = manager.submit(JobSpec(dataset.id, "teacher", "mf", {"mode": "quick"}))
    manager.wait(quick, timeout=30)
    print(f"FINISHED {quick}", flush=True)
    slow = manager.submit(JobSpec(dataset.id, "teacher", "mf", {"mode": "slow"}))
    queued = manager.submit(JobSpec(dataset.id, "baseline", "mf", {"mode": "quick"}))
    print(f"QUEUED {queued}", flush=True)
    queued_printed.set()
    manager.wait(slow)


if __name__ == "__main__":
    main()
