"""Giving freed heap memory back to the operating system after a model version is unloaded.

Why: glibc's malloc keeps memory freed by a closed engine in its arenas (one per thread that
allocated: the watcher thread loads, request threads run), so RSS only grows across hot
swaps although a single version is alive: measured with benchmarks/serve.py --swaps, a
28 MB model went from 224 MB to 449-505 MB over 8 swaps, and stayed at 150-179 MB with
`malloc_trim(0)` after each unload (which walks every arena). Elsewhere (musl, macOS) this
is a no-op.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
from functools import lru_cache
from typing import Callable

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):   # not glibc (e.g. musl on Alpine)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Collect garbage and return free heap pages to the OS; True if malloc_trim ran."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), None where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
