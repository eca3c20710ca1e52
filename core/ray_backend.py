"""Ray as an optional job backend: runs become Ray tasks, and report to the same store.

``DISTILLERY_RAY_ADDRESS`` (core.settings) turns it on for every job manager with worker
threads (the app's, a headless worker's): ``auto`` (the cluster ``ray start`` set up on this
machine), ``ray://host:10001`` (Ray Client) or ``host:6379``; ``local`` starts a private Ray
in this process. Without it, or without Ray installed (``pip install -r
requirements-ray.txt``), nothing here is imported: ``import ray`` happens only inside
functions of this module.

How a run travels:

1. A worker thread of the `JobManager` claims a queued run in the store, exactly as it
   does without Ray, so each run still executes once, whichever processes share the store.
   The manager's heartbeat keeps the run's lease alive while the run waits for, and runs
   in, its Ray task.
2. The thread submits `run_on_ray` as a Ray task with resource requests: one GPU for a
   teacher when the cluster has GPUs (unless its config pins it to the CPU), else CPU only;
   `CPUS_PER_RUN` CPUs each.
3. In the Ray worker process, `run_on_ray` opens the run store by URL and the data
   directory of the process that submitted it, and serves the run with a job manager of its
   own (no threads, a heartbeat) that holds the claim under the same owner id: the same
   `JobManager._serve` and runner (core.runner.training_runner) a local thread uses. So
   progress, epochs, checkpoints, metrics, the final status and the release of the runs
   of a plan that wait for this one (core.plan_queries, inside the store) happen exactly as
   for a local run; this module duplicates none of it.
4. The thread waits for the task, and records the end of the run itself only when the task
   could not: a task cancelled before it started, killed, or whose process or node died.

There is one worker thread per run in flight: as many as the cluster has CPUs for
(`CPUS_PER_RUN` each, at most `MAX_IN_FLIGHT`), and at least ``DISTILLERY_WORKERS``; so the
runs of a sweep train at once across the cluster, and Ray places them.

Cancel: the flag in the store reaches the Ray task as it reaches any process (its job
manager's heartbeat sets the cancel event, which the trainer checks between batches), and
the run ends ``cancelled`` there. A task that has not ended `CANCEL_GRACE_S` after the
cancel (still queued in Ray, or busy in code that does not look at the event) is ended by
``ray.cancel(force=True)``, and the worker thread records the run ``cancelled`` (or
``interrupted``, when its own process is stopping) and removes its files. A Ray worker or
node that dies ends its run ``interrupted`` (resume queues it again); Ray's out-of-memory
killer ends it ``failed`` with the out-of-memory sentence.

Where the store and files live: the task uses the same store URL and data directory
(``DISTILLERY_HOME``) as the process that submitted it. A SQLite store works for a local Ray
(every process on one machine). A cluster of several machines needs PostgreSQL
(``DISTILLERY_DB_URL``), the data directory on a shared volume mounted at the same path on
every node (as for headless workers, see core.worker), and Distillery's code and
requirements-ray.txt installed on every node. The store URL, password included, travels to
the task as an argument.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.enums import Family, Role
from core.errors import ConfigError
from core.records import RunRecord
from core.remote_run import RemoteRun, finish, serve_claimed, wait_with_grace
from core.settings import RAY_ADDRESS_ENV

if TYPE_CHECKING:
    from core.jobs import JobManager, _Executing

log = logging.getLogger(__name__)

CPUS_PER_RUN = 1  # a recommender run keeps one core busy; Ray then runs one run per core
MAX_IN_FLIGHT = 32  # worker threads (runs in flight) of one job manager, whatever the cluster
CANCEL_GRACE_S = 10.0  # a cancelled task ends by itself within a heartbeat and a batch
RAY_LOST_NOTE = "interrupted: the Ray worker running it stopped while it was in progress"
_WAIT_S = 0.5  # how often a worker thread looks at its task and at the cancel event


def connect(address: str) -> Any:
    """The ``ray`` module, connected to ``address`` (reusing a connection already made in
    this process); one sentence when Ray is missing or the cluster cannot be reached."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"{RAY_ADDRESS_ENV} is set, but Ray is not installed; run "
            f"`pip install -r requirements-ray.txt`, or unset {RAY_ADDRESS_ENV}."
        ) from exc
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,  # Ray's own "local" starts a private instance
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
            )
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"The Ray cluster at {address!r} cannot be reached ({reason}); start it "
                f"(`ray start --head`), fix {RAY_ADDRESS_ENV}, or unset it to train here."
            ) from exc
    return ray


class RayBackend:
    """Runs the runs a `JobManager` claims as Ray tasks (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        cpus_per_run: float = CPUS_PER_RUN,
        cancel_grace_s: float = CANCEL_GRACE_S,
    ) -> None:
        if cpus_per_run <= 0 or cancel_grace_s < 0:
            raise ConfigError("A Ray run needs a positive number of CPUs and a grace >= 0.")
        self.address = address
        self.cpus_per_run = float(cpus_per_run)
        self.cancel_grace_s = float(cancel_grace_s)
        self._ray = connect(address)
        self._task = self._ray.remote(max_retries=0)(run_on_ray)
        self._lock = threading.Lock()
        self._in_flight: dict[int, Any] = {}  # run id -> ObjectRef of its task
        self.submitted = 0  # tasks submitted so far (for logs and tests)

    # ------------------------------------------------------------ sizing
    def slots(self, workers: int) -> int:
        """How many runs to keep in flight: what the cluster's CPUs hold, at least
        ``workers``, at most `MAX_IN_FLIGHT`."""
        cpus = float(self._ray.cluster_resources().get("CPU", 0))
        return max(workers, min(MAX_IN_FLIGHT, int(cpus // self.cpus_per_run)))

    def resources(self, run: RunRecord) -> dict[str, float]:
        """The Ray resource request of one run: a GPU for a teacher when the cluster has one."""
        train = run.config.get("train") if isinstance(run.config, Mapping) else None
        pinned_to_cpu = isinstance(train, Mapping) and train.get("device") == "cpu"
        wants_gpu = run.role == Role.TEACHER and run.model != Family.POPULARITY
        has_gpu = float(self._ray.cluster_resources().get("GPU", 0)) >= 1
        gpus = 1.0 if wants_gpu and has_gpu and not pinned_to_cpu else 0.0
        return {"num_cpus": self.cpus_per_run, "num_gpus": gpus}

    def in_flight(self) -> list[int]:
        """Ids of the runs whose Ray task has not ended yet."""
        with self._lock:
            return sorted(self._in_flight)

    # ------------------------------------------------------------ one run
    def serve(self, manager: JobManager, run: RunRecord) -> None:
        """Run a run ``manager`` has claimed as a Ray task and wait for it (on a worker
        thread of ``manager``); record its end when the task could not."""
        executing = manager._begin(run)
        error: BaseException | None = None
        try:
            if manager.store.set_progress(
                run.id, manager.owner, {"message": "waiting for a Ray worker"}
            ):
                executing.cancel.set()  # a cancel came first: the task stops at its first check
            call = RemoteRun.of(manager, run.id)
            ref = self._task.options(**self.resources(run)).remote(call)
            with self._lock:
                self._in_flight[run.id] = ref
                self.submitted += 1
            log.info("run %s sent to Ray by %s", run.id, manager.owner)
            self._wait(ref, executing.cancel)
            self._ray.get(ref)
        except BaseException as exc:
            error = exc
        finally:
            with self._lock:
                self._in_flight.pop(run.id, None)
        self._finish(manager, run.id, executing, error)

    def _wait(self, ref: Any, cancel: threading.Event) -> None:
        """Until the task ends; after a cancel, give it `cancel_grace_s` to end by itself,
        then end it with ``ray.cancel``."""

        def force() -> None:
            log.info("cancelling the Ray task of a run that did not stop by itself")
            self._ray.cancel(ref, force=True)
            self._ray.wait([ref])  # its end (an error) comes from ray.get

        def ended(timeout: float) -> bool:
            return bool(self._ray.wait([ref], timeout=timeout)[0])

        wait_with_grace(ended, cancel, self.cancel_grace_s, force, _WAIT_S)

    def _finish(
        self, manager: JobManager, run_id: int, executing: _Executing, error: BaseException | None
    ) -> None:
        error = getattr(error, "cause", None) or error  # an exception raised in the task
        died = error is not None and isinstance(error, self._died_errors())
        finish(
            manager,
            run_id,
            executing,
            error,
            lost_note=RAY_LOST_NOTE if died else None,
            where="Ray task",
        )

    def _died_errors(self) -> tuple[type[BaseException], ...]:
        errors = self._ray.exceptions
        return (errors.WorkerCrashedError, errors.NodeDiedError, errors.LocalRayletDiedError)


# --------------------------------------------------------------------------- in the task
def run_on_ray(call: RemoteRun) -> str:
    """The Ray task: serve one claimed run in this Ray worker (core.remote_run)."""
    return serve_claimed(call)
