"""core.allocator: big freed blocks are reused (no page faults a step) once the main thread
applies the settings; another thread leaves them unset; an operator's own settings are left
alone; the free memory goes back to the system on release; training applies the settings.

Each case runs in a fresh Python process: the settings are process-wide and once only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import allocator

ROOT = Path(__file__).resolve().parent.parent
GLIBC = allocator._glibc() is not None
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere a no-op")

# Allocates, touches and frees a 64 MB tensor (above glibc's largest adaptive mmap
# threshold, as a big catalog's score matrix is) a few times, and counts minor page faults.
PROBE = """
import json, os, resource, sys, threading
import torch
from core import allocator

def faults(times=6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.empty(16 * 2**20).fill_(1.0)  # 64 MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def in_thread(fn):
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]
"""


def run(body: str, env: dict | None = None) -> dict:
    script = PROBE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_big_freed_blocks_are_reused_once_the_main_thread_applies_the_settings():
    out = run(
        """
        default = faults()
        applied = allocator.reuse_freed_blocks()
        faults(12)  # the heap grows until its free blocks fit the requests (memalign slack)
        print(json.dumps({"default": default, "applied": applied,
            "again": allocator.reuse_freed_blocks(), "reused": faults()}))
        """
    )
    assert out["applied"] is True and out["again"] is True
    # By default each 64 MB block is mapped afresh: 16,384 pages of 4 KB, faulted each time.
    assert out["default"] > 6 * 10_000
    # Kept for reuse: the same blocks come back from the heap with their pages mapped.
    assert out["reused"] < 2_000


@needs_glibc
def test_another_thread_leaves_the_settings_unset():
    out = run(
        """
        from_thread = in_thread(allocator.reuse_freed_blocks)
        print(json.dumps({"from_thread": from_thread, "state": allocator._applied,
            "faults": faults()}))
        """
    )
    assert out["from_thread"] is False and out["state"] is None
    assert out["faults"] > 6 * 10_000  # glibc's defaults still rule


@needs_glibc
def test_an_operators_own_malloc_settings_are_left_alone():
    out = run(
        """
        print(json.dumps({"applied": allocator.reuse_freed_blocks(),
            "named": allocator.operator_settings(), "faults": faults()}))
        """,
        env={"MALLOC_ARENA_MAX": "2"},
    )
    assert out == {"applied": False, "named": ["MALLOC_ARENA_MAX"], "faults": out["faults"]}
    assert out["faults"] > 6 * 10_000  # glibc's defaults still rule


@needs_glibc
def test_release_hands_the_kept_memory_back():
    out = run(
        """
        allocator.reuse_freed_blocks()
        start = rss_mb()
        blocks = [torch.empty(16 * 2**20).fill_(1.0) for _ in range(3)]  # 3 x 64 MB
        del blocks
        kept = rss_mb()
        allocator.release_freed_memory()
        print(json.dumps({"start": start, "kept": kept, "released": rss_mb()}))
        """
    )
    assert out["kept"] - out["start"] > 150  # freed, but kept for reuse
    assert out["kept"] - out["released"] > 150  # handed back
    assert out["released"] - out["start"] < 50


def test_training_applies_the_settings():
    out = run(
        """
        from core.enums import Family
        from core.models import ModelConfig, build_model
        from core.pipeline import load_demo_dataset
        from core.train import TrainConfig, train_model
        data = load_demo_dataset(scale=0.05)
        model = build_model(ModelConfig(family=Family.MF, dim=8), data.n_users, data.n_items)
        before = allocator._applied
        train_model(model, data, TrainConfig(epochs=1, min_epochs=1, batch_size=64))
        print(json.dumps({"before": before, "after": allocator._applied}))
        """
    )
    assert out == {"before": None, "after": GLIBC}


def test_elsewhere_than_glibc_nothing_is_set(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator, "_applied", None)
    allocator._glibc.cache_clear()
    try:
        assert allocator._glibc() is None
        assert allocator.reuse_freed_blocks() is False
        allocator.release_freed_memory()  # a no-op, not an error
    finally:
        allocator._glibc.cache_clear()
