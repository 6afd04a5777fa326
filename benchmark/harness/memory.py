"""Giving a reused worker's memory back between trials.

A Ray worker that runs trial after trial (``reuse_actors``) keeps what its trials freed
in the C allocator's arenas unless it is handed back: glibc returns freed pages at the
top of the heap only, and a trial's tensors are freed in no particular order. After each
trial the worker collects Python's garbage (tensors held by reference cycles) and asks
glibc to return every free page (``malloc_trim(0)``). Measured with
``scripts/bench_trial_memory.py`` (docs/benchmarks.md, issue 36).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, bound once per process; ``None`` off Linux or off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def give_back_memory() -> bool:
    """Collect garbage and return free heap pages to the OS. Returns whether glibc's
    ``malloc_trim`` ran (``False`` off glibc, e.g. macOS or musl: garbage is still
    collected)."""
    gc.collect()
    trim = malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
