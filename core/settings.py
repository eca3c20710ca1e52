"""Every environment switch of the product, read in one place.

Pages, the CLI and the job manager call these functions instead of reading ``os.environ``
themselves, so the full list of knobs (and their defaults) is visible here. They are
functions, not constants, so tests can change the environment after import.

| variable                | meaning                                                      | default            |
|-------------------------|--------------------------------------------------------------|--------------------|
| DISTILLERY_HOME         | the data directory (store, datasets, checkpoints, bundles)    | ./.distillery      |
| DISTILLERY_DB_URL       | SQLAlchemy URL of the run store (SQLite file or PostgreSQL)   | SQLite under HOME  |
| DISTILLERY_WORKERS      | training threads of the app's job manager                     | 1                  |
| DISTILLERY_SYNC_JOBS    | page tests: a submit waits for its runs in the same rerun     | off                |
| DISTILLERY_DEMO_SCALE   | size of the one-click demo shop (tests shrink it)             | 1.0                |
| DISTILLERY_DEMO_EPOCHS  | cap on every demo run's epochs (tests and slow machines)      | the presets        |
| DISTILLERY_RAY_ADDRESS  | Ray cluster that trains runs: auto, ray://host:10001, local   | off                |
| DISTILLERY_EXECUTOR     | where the app's and workers' runs train: process or thread    | process            |
"""

from __future__ import annotations

import os

HOME_ENV = "DISTILLERY_HOME"
DB_URL_ENV = "DISTILLERY_DB_URL"
WORKERS_ENV = "DISTILLERY_WORKERS"
SYNC_JOBS_ENV = "DISTILLERY_SYNC_JOBS"
DEMO_SCALE_ENV = "DISTILLERY_DEMO_SCALE"
DEMO_EPOCHS_ENV = "DISTILLERY_DEMO_EPOCHS"
RAY_ADDRESS_ENV = "DISTILLERY_RAY_ADDRESS"
EXECUTOR_ENV = "DISTILLERY_EXECUTOR"
EXECUTORS = ("process", "thread")


def _raw(name: str) -> str:
    return os.environ.get(name, "").strip()


def workers() -> int:
    """Training threads of the app's job manager (at least 1)."""
    try:
        return max(1, int(_raw(WORKERS_ENV) or 1))
    except ValueError:
        return 1


def sync_jobs() -> bool:
    """True in page tests: a submit waits for the runs it queued."""
    return _raw(SYNC_JOBS_ENV) not in ("", "0")


def demo_scale() -> float:
    """Scale of the demo shop (default 1.0; tests use 0.05)."""
    try:
        value = float(_raw(DEMO_SCALE_ENV) or 1.0)
    except ValueError:
        return 1.0
    return value if value > 0 else 1.0


def demo_epochs() -> int | None:
    """Cap on every demo run's epochs (unset = the presets)."""
    try:
        value = int(_raw(DEMO_EPOCHS_ENV) or 0)
    except ValueError:
        return None
    return value if value > 0 else None


def ray_address() -> str | None:
    """The Ray cluster that trains the runs (unset: the job manager's own threads)."""
    return _raw(RAY_ADDRESS_ENV) or None


def executor() -> str:
    """Where the runs of the app (and of headless workers) train without Ray: ``process``
    (a fresh process per run, core.process_backend) or ``thread`` (the job manager's worker
    threads: quicker to start, slower to train; tests of fake runners use it)."""
    value = _raw(EXECUTOR_ENV).lower() or "process"
    return value if value in EXECUTORS else "process"
