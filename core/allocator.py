"""The C allocator's settings for training: big score matrices reuse freed memory.

A training step allocates and frees tensors of ``[rows, n_items]`` floats: the student's
scores, their softmax, their gradient. glibc's ``malloc`` serves a block above its mmap
threshold with a fresh ``mmap`` and unmaps it again on ``free``; the threshold adapts to
the blocks a process frees, but never above 32 MB. On a catalog of more than about 10,000
items a step's score matrix is bigger than that (770 rows x 16,825 items is 52 MB), so every
step maps fresh pages and the kernel zero-fills each one on first touch. On the generated
``repeat_longtail`` log (16,825 items) a twin's step spent 240 ms of system time in page
faults (67,000 a step): 352 ms a step (median), against 227 ms once freed blocks are
kept for reuse, with the same weights bit for bit (``python bench/allocator.py``). The demo shop's 9 MB matrices stay under the adaptive threshold, so
nothing changes there.

:func:`reuse_freed_blocks` therefore serves blocks of up to :data:`HEAP_BLOCK_BYTES`
(128 MB: a step of 770 rows over 40,000 items) from the heap and keeps up to
:data:`KEEP_FREE_BYTES` free at its top. The price is memory: the heap keeps a run's freed
blocks, with some fragmentation (a twin on ``repeat_longtail`` held 1.17 GB after its first
epoch and no more over seven, against a 0.64 GB peak by default), so bigger blocks keep
glibc's own rule rather than multiplying that price. :func:`release_freed_memory` hands the
free memory back (``malloc_trim``) when a run ends, so a long-lived process does not keep a
run's peak.

Only the main thread gains: a training run's own process (the app's default executor,
core.process_backend), the CLI, the benches and a Ray task all train there. Another thread
allocates from an arena of its own, whose heaps hold at most 64 MB; there the settings kept
0.4 GB more for no faster step (measured), so a run on a thread (``DISTILLERY_EXECUTOR=
thread``) leaves them unset. Capping the arenas at one (``M_ARENA_MAX``) does not help
either: glibc then lets a new thread reuse any arena that already exists, not the main one.

Only glibc has these knobs (``mallopt``); elsewhere both functions do nothing. An operator's
own ``MALLOC_*`` environment variables or ``glibc.malloc`` tunables win: the settings are
then left as they are. This is ``ctypes`` on the C library rather than a package: no
maintained Python library sets ``mallopt``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import threading

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap; the heap keeps up to this much free at its top.
HEAP_BLOCK_BYTES = 128 * 2**20
KEEP_FREE_BYTES = 256 * 2**20
SETTINGS = ((M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES), (M_TRIM_THRESHOLD, KEEP_FREE_BYTES))
_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet in this process


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


def operator_settings() -> list[str]:
    """The environment's own allocator settings, which :func:`reuse_freed_blocks` leaves be."""
    named = [name for name in _ENV if name in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        named.append("GLIBC_TUNABLES")
    return named


def reuse_freed_blocks() -> bool:
    """Keep freed blocks of up to :data:`HEAP_BLOCK_BYTES` for reuse: once per process,
    from its main thread (later calls return the first one's answer; a call from another
    thread changes nothing and returns False). True when the settings hold."""
    global _applied
    if threading.current_thread() is not threading.main_thread():
        return bool(_applied)
    with _lock:
        if _applied is None:
            libc = _glibc()
            _applied = (
                libc is not None
                and not operator_settings()
                and all(libc.mallopt(option, value) == 1 for option, value in SETTINGS)
            )
        return _applied


def release_freed_memory() -> None:
    """Give the heap's free memory back to the system (``malloc_trim``): at a run's end."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
