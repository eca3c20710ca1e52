"""How big a log this machine can load: the memory budget, and the sentence when it is over.

A log too big for memory must end with one clear sentence, never with the kernel killing
the process (which takes the app, and every run it is training, with it). So ingestion
counts rows as it reads and compares the memory they will need with a budget:

    budget = BUDGET_SHARE x the memory this process may use

"The memory this process may use" is the machine's physical memory (``os.sysconf``), or
the container's limit when a cgroup sets a lower one. Half of it, because the app, the
models it trains and the other processes on the machine need the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import DataError
from core.ingestion.messages import human_size

BUDGET_SHARE = 0.5
# Peak bytes per row of loading a log: parsed columns, the sort by (user, time), the finished
# InteractionData (users, items, timestamps, weights, split, event types: 37 bytes a row on
# their own) and the largest temporaries next to them. bench/scale.py measured 69 on 20
# million rows; 90 leaves room for allocator slack.
BYTES_PER_ROW = 90
# The same for the whole-file path of small files, per byte of the file: it holds every
# column as text (bench/ingest.py's 1M-row CSV peaks at about 7x its size).
TEXT_BYTES_PER_FILE_BYTE = 8

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory or a lower cgroup limit."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):  # not POSIX: assume a small laptop rather than fail
        physical = 8 * 1024**3
    for path in _CGROUP_LIMITS:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < physical:
            return int(raw)
    return physical


def memory_budget() -> int:
    """Bytes a log may take to load (see the module docstring for the rule)."""
    return int(BUDGET_SHARE * machine_memory())


def check_rows(rows: int, display: str, *, so_far: bool = False) -> None:
    """Refuse a log of ``rows`` rows (``so_far``: rows read, with more to come) over budget."""
    need, budget = rows * BYTES_PER_ROW, memory_budget()
    if need > budget:
        _refuse(display, f"has {'at least ' if so_far else ''}{rows:,} rows", need, budget)


def check_text_bytes(size: int, display: str) -> None:
    """Refuse a file too big to read whole (the path for files the reader cannot stream)."""
    need, budget = size * TEXT_BYTES_PER_FILE_BYTE, memory_budget()
    if need > budget:
        _refuse(display, f"is {human_size(size)}", need, budget)


def _refuse(display: str, what: str, need: int, budget: int) -> None:
    raise DataError(
        f"'{display}' {what}, which would take about {human_size(need)} of memory to load, "
        f"over this machine's budget of {human_size(budget)} (half of its "
        f"{human_size(machine_memory())}); load a sample of the rows, filter the log first "
        "(fewer days, users or event types) or use a machine with more memory."
    )
