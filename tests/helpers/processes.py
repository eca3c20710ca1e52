"""Real separate processes sharing one store, for the multi-process tests and the bench.

`LoggedProcess` runs a Python module of this repository on the store and data directory
named by the environment (``DISTILLERY_DB_URL``, ``DISTILLERY_HOME``), collects its output
(stdout and stderr) on a thread, so that a full pipe never blocks it, and is always ended
on exit. `WorkerProcess` is the headless worker, ``python -m core worker``; `AppProcess`
is a stand-in app server (tests/helpers/app_process.py). `executions` reads, from any set
of logs, which runs were started how often: the job manager logs one
``run N started by OWNER`` line per execution.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
STARTED = re.compile(r"run (\d+) started by (\S+)")
SERVING = re.compile(r"worker (\S+) serving ")
RESULT_PREFIX = "RESULT "
WAIT_S = 120


class LoggedProcess:
    """``python -m MODULE ARGS`` with its output collected; killed if still alive on exit."""

    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = WAIT_S) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def __enter__(self) -> LoggedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class WorkerProcess(LoggedProcess):
    """``python -m core worker ARGS`` with a lease of ``lease_s`` seconds.

    Shorter than the default 30 s so that a dead worker's run is recovered soon, and long
    enough that a live worker on a busy machine (two cores, several processes training)
    never misses it.
    """

    def __init__(self, *args: str, lease_s: float = 10.0, env: dict[str, str] | None = None):
        super().__init__("core", "worker", "--lease-seconds", str(lease_s), *args, env=env)

    @property
    def owner(self) -> str | None:
        found = SERVING.search(self.output)
        return found.group(1) if found else None

    def wait_until_serving(self, timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while self.owner is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker never started serving:\n{self.output}")
            time.sleep(0.05)
        return self.owner

    def __enter__(self) -> WorkerProcess:
        return self


class AppProcess(LoggedProcess):
    """A stand-in app server (see tests/helpers/app_process.py for its arguments)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__("tests.helpers.app_process", *args, env=env)

    def result(self) -> dict[str, Any]:
        """The summary it printed last (after it exited)."""
        for line in reversed(self._lines):
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        raise AssertionError(f"the app process printed no result:\n{self.output[-3000:]}")


def executions(logs: Iterable[str]) -> Counter[int]:
    """How many times each run was started, over all the given log texts."""
    return Counter(int(m.group(1)) for text in logs for m in STARTED.finditer(text))
