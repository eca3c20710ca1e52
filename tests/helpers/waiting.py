"""Waiting in tests for something another thread or process does: a condition polled
until it holds (failing with what was awaited), and "this run is training"."""

from __future__ import annotations

import time

from core.jobs import JobManager

WAIT_S = 120  # an upper bound for waits that end long before when things work


def wait_until(condition, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def training(manager: JobManager, run_id: int) -> bool:
    """The run has stored an epoch: seen through the store, whoever runs it."""
    progress = manager.progress(run_id)
    return progress is not None and progress.status == "running" and progress.epoch >= 1
