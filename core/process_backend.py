"""Worker processes as the job backend: each claimed run trains in a fresh process.

Why: a training loop runs markedly slower on a secondary thread of a busy process than on
a process's main thread. Measured by ``bench/threads.py`` on 2 CPU cores, a demo teacher
epoch took 1.1-1.6x as long on a worker thread (elementwise kernels up to 1.9x), and in
the app the thread also shares the interpreter with Streamlit's own threads. A fresh
process (spawned, so nothing of Streamlit or of the parent's thread pools is inherited)
trains on its main thread; the app's process only serves pages.

The process is ``python -m core.process_backend`` (a `subprocess`, not `multiprocessing`:
spawning through multiprocessing re-imports the parent's main module, Streamlit's or a
script's), and the claimed run reaches it as JSON on its standard input (the store URL
stays out of the process list; nothing is unpickled).

How a run travels (the same path as a Ray task, core.remote_run): a worker thread of the
`JobManager` claims the run in the store, starts a process that serves it under the same
lease (`serve_claimed`: the same `JobManager._serve` and runner), and waits for it. The
process writes epochs, progress, files, metrics and the final status to the store itself.

- Threads: each process gets ``cores // workers`` torch threads (at least one), so runs
  that train at once never oversubscribe the cores (OpenMP teams fighting over cores make
  small kernels many times slower).
- Cancel: the store's cancel flag reaches the process through its own heartbeat, and the
  run ends ``cancelled`` at its next batch. A process still alive `CANCEL_GRACE_S` later
  (or when this app stops) is terminated, and the worker thread records the end.
- A process that dies (killed, out of memory) ends its run ``interrupted`` with
  `PROCESS_LOST_NOTE`; one click resumes it. A process whose parent died (the app was
  killed) stops within `ORPHAN_CHECK_S`: its run is then recovered like any run of a dead
  process (its lease runs out: ``interrupted``).
- The runner travels by name (core.remote_run.runner_reference), so it must be a
  module-level function (the app's is core.runner.training_runner) or an instance of a
  module-level class with plain JSON fields. A process costs about two seconds to start (importing
  torch), small next to any epoch; a popularity run (a count) stays on the worker thread.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core import settings
from core.enums import Family
from core.errors import ConfigError
from core.records import RunRecord
from core.remote_run import RemoteRun, finish, serve_claimed, wait_with_grace

if TYPE_CHECKING:
    from core.jobs import JobManager

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 10.0  # a cancelled run ends by itself within a heartbeat and a batch
PROCESS_LOST_NOTE = (
    "interrupted: the process training it stopped while it was in progress "
    "(killed, or out of memory); resume it to train it again"
)
_WAIT_S = 0.5  # how often a worker thread looks at its process and at the cancel event
ORPHAN_CHECK_S = 1.0  # how often a training process checks that its parent is alive
ROOT = Path(__file__).resolve().parent.parent


def cpu_cores() -> int:
    """Cores this process may use (its affinity where the platform says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_backend() -> ProcessBackend | None:
    """The backend of the app's and the headless workers' job managers: processes, unless
    Ray is on (the job manager then picks Ray) or ``DISTILLERY_EXECUTOR=thread``."""
    if settings.ray_address() or settings.executor() != "process":
        return None
    return ProcessBackend()


class ProcessBackend:
    """Runs the runs a `JobManager` claims in fresh local processes (see the module doc)."""

    def __init__(self, *, cancel_grace_s: float = CANCEL_GRACE_S, cores: int | None = None):
        if cancel_grace_s < 0:
            raise ConfigError("The cancel grace of a training process must be >= 0 seconds.")
        self.cancel_grace_s = float(cancel_grace_s)
        self.cores = cores or cpu_cores()
        self.threads = self.cores
        self._lock = threading.Lock()
        self._in_flight: dict[int, subprocess.Popen] = {}
        self.started = 0  # processes started so far (for logs and tests)

    def slots(self, workers: int) -> int:
        """Runs in flight: the manager's workers; each process then takes its share of
        the cores."""
        self.threads = max(1, self.cores // max(1, workers))
        return workers

    def in_flight(self) -> dict[int, int | None]:
        """Run id -> pid of the processes training right now."""
        with self._lock:
            return {run_id: proc.pid for run_id, proc in self._in_flight.items()}

    def serve(self, manager: JobManager, run: RunRecord) -> None:
        """Train a run ``manager`` has claimed in a new process and wait for it (on a worker
        thread of ``manager``); record its end when the process could not. A popularity run
        (a count over the log, in milliseconds) is served on this thread: a process would
        cost more than it."""
        if run.model == Family.POPULARITY:
            manager._serve(run)
            return
        executing = manager._begin(run)
        error: BaseException | None = None
        died = False
        try:
            call = RemoteRun.of(manager, run.id, threads=self.threads)
            proc = subprocess.Popen(
                [sys.executable, "-m", "core.process_backend"],
                stdin=subprocess.PIPE,
                env=_child_environment(),
            )
            with self._lock:
                self._in_flight[run.id] = proc
                self.started += 1
            log.info("run %s training in process %s", run.id, proc.pid)
            with proc.stdin:
                proc.stdin.write(call.to_json().encode())
            self._wait(proc, executing.cancel)
            died = proc.returncode != 0 and not executing.cancel.is_set()
            if proc.returncode != 0:
                error = RuntimeError(f"its training process exited with code {proc.returncode}")
        except BaseException as exc:
            error = exc
        finally:
            with self._lock:
                gone = self._in_flight.pop(run.id, None)
            if gone is not None and gone.poll() is None:
                _stop(gone)
        finish(
            manager,
            run.id,
            executing,
            error,
            lost_note=PROCESS_LOST_NOTE if died else None,
            where="training process",
        )

    def _wait(self, proc: subprocess.Popen, cancel: threading.Event) -> None:
        """Until the process ends; after a cancel, give it `cancel_grace_s` to end by itself,
        then terminate it."""

        def force() -> None:
            log.info("terminating the training process of a run that did not stop by itself")
            _stop(proc)

        def ended(timeout: float) -> bool:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True

        wait_with_grace(ended, cancel, self.cancel_grace_s, force, _WAIT_S)


def _child_environment() -> dict[str, str]:
    """This process's environment, with its import path: the runner travels by name, and
    its module must import there as it does here."""
    path = [str(ROOT), *(p for p in sys.path if p)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}


def _stop(proc: subprocess.Popen) -> None:
    """Terminate, and kill if it does not end within five seconds."""
    proc.terminate()
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exit_with_parent(parent: int) -> None:
    """In the training process: stop when the process that started it is gone (the app was
    killed), as a worker thread would have stopped with it."""

    def watch() -> None:
        while True:
            time.sleep(ORPHAN_CHECK_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="distillery-orphan-check", daemon=True).start()


def main() -> int:
    """``python -m core.process_backend``: serve the `RemoteRun` given as JSON on standard
    input."""
    _exit_with_parent(os.getppid())
    serve_claimed(RemoteRun.from_json(sys.stdin.read()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
