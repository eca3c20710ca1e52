"""Serving a run claimed by one job manager in another process: the shared half of the
Ray backend (core.ray_backend) and the process backend (core.process_backend).

A worker thread of a `JobManager` claims a run in the store and hands it, as a
`RemoteRun`, to another process: a Ray task, or a fresh local process. There,
`serve_claimed` opens the same store and data directory and serves the run with a job
manager of its own (no worker threads, a heartbeat) holding the claim under the claiming
manager's owner id: the same `JobManager._serve` and runner a local thread uses, so
progress, epochs, checkpoints, metrics, the final status and the release of the plan's
waiting runs are written exactly as for a run trained in the claiming process.

Back on the worker thread, `finish` records the end of the run only when that process
could not: it was stopped before it started, killed, or it died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.enums import Status
from core.errors import StoreError
from core.settings import DB_URL_ENV, HOME_ENV
from core.store import Store

if TYPE_CHECKING:
    from core.job_context import Runner
    from core.jobs import JobManager, _Executing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteRun:
    """What another process needs to serve one claimed run."""

    run_id: int
    owner: str  # the claiming job manager's id: the process writes under its lease
    store_url: str
    home: str
    lease_s: float
    runner: Runner
    threads: int | None = None  # torch's intra-op threads there (None: torch's default)

    @classmethod
    def of(cls, manager: JobManager, run_id: int, threads: int | None = None) -> RemoteRun:
        from core import paths

        return cls(
            run_id=run_id,
            owner=manager.owner,
            store_url=manager.store.engine.url.render_as_string(hide_password=False),
            home=str(paths.data_dir()),
            lease_s=manager.lease_s,
            runner=manager._runner,
            threads=threads,
        )

    # ------------------------------------------------------------ as JSON (processes)
    def to_json(self) -> str:
        """This call as JSON, the runner named by its import path (a module-level function,
        or an instance of a module-level class rebuilt from its dataclass fields): a
        training process reads it from a pipe, and nothing is unpickled there."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["runner"] = runner_reference(self.runner)
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> RemoteRun:
        fields = json.loads(text)
        fields["runner"] = load_runner(fields["runner"])
        return cls(**fields)


def runner_reference(runner: Runner) -> dict[str, Any]:
    """``{"path": "module:qualname", "fields": {...}}`` naming ``runner`` (see `to_json`)."""
    target = runner if callable(runner) and hasattr(runner, "__qualname__") else type(runner)
    path = f"{target.__module__}:{target.__qualname__}"
    if "<" in target.__qualname__:
        raise ValueError(
            f"The runner {path} is not importable by name (define it at module level)."
        )
    if target is runner:
        return {"path": path}
    if dataclasses.is_dataclass(runner):
        values = {f.name: getattr(runner, f.name) for f in dataclasses.fields(runner)}
    else:
        values = dict(vars(runner))
    json.dumps(values)  # a runner whose fields are not plain JSON cannot travel: fail here
    return {"path": path, "fields": values}


def load_runner(reference: Mapping[str, Any]) -> Runner:
    """The runner `runner_reference` named."""
    module_name, _, qualname = str(reference["path"]).partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if "fields" in reference:
        return target(**reference["fields"])
    return target


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the length of one run (Ray reuses its workers for
    runs of other stores; a worker serves one run at a time)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def serve_claimed(call: RemoteRun) -> str:
    """Serve one claimed run in this process, exactly as a worker thread of the claiming job
    manager would, and return the status the run ended with."""
    from core.jobs import JobManager

    if call.threads is not None:
        import torch

        torch.set_num_threads(max(1, call.threads))
    with (
        _environment({HOME_ENV: call.home, DB_URL_ENV: call.store_url}),
        Store(call.store_url) as store,
    ):
        run = store.get_run(call.run_id)
        if run.status != Status.RUNNING or run.owner != call.owner:
            return run.status  # cancelled, or taken over, while it waited to start
        manager = JobManager(
            store,
            call.runner,
            workers=0,
            recover=False,
            lease_s=call.lease_s,
            owner=call.owner,
        )
        try:
            manager._serve(run)
        finally:
            manager.shutdown(wait=True)
        return store.get_run(call.run_id).status


def wait_with_grace(
    ended: Callable[[float], bool],
    cancel: threading.Event,
    grace_s: float,
    force: Callable[[], None],
    poll_s: float = 0.5,
) -> None:
    """Until ``ended(poll_s)`` (which waits up to ``poll_s`` for the other process) says it
    has ended; once ``cancel`` is set, give it ``grace_s`` to end by itself, then ``force``
    its end and return."""
    cancelled_at: float | None = None
    while not ended(poll_s):
        if not cancel.is_set():
            continue
        now = time.monotonic()
        cancelled_at = now if cancelled_at is None else cancelled_at
        if now - cancelled_at >= grace_s:
            force()
            return


def finish(
    manager: JobManager,
    run_id: int,
    executing: _Executing,
    error: BaseException | None,
    *,
    lost_note: str | None,
    where: str,
) -> None:
    """After the other process has ended: record the end of the run unless that process did.

    ``error`` is what waiting for it raised (None: it returned); ``lost_note`` is set when
    the process died (the run then ends ``interrupted`` with that note, and resume queues it
    again); ``where`` names it in the log ("Ray task", "training process").
    """
    try:
        record = manager.store.get_run(run_id)
        ended = record.status != Status.RUNNING or record.owner != manager.owner
    except StoreError as exc:
        log.warning("could not read run %s after its %s: %s", run_id, where, exc)
        ended = False
    if ended:  # the process recorded the end (or the run was taken over): nothing to add
        if error is not None:
            log.info("the %s of run %s ended with %s", where, run_id, type(error).__name__)
        manager._release(run_id)
        return
    if error is None:
        error = RuntimeError(f"its {where} ended without recording the end of the run")
    if lost_note is not None and executing.stop_note is None:
        executing.stop(lost_note)
    status, message = manager._ending(run_id, executing, error)
    manager._end(run_id, executing, status, message)
