"""Bound glibc's malloc arenas before the server starts its threads.

glibc gives each thread that allocates under contention an arena of its own (up to 8 per core) and keeps what is
freed there for reuse. The decode threads each hold a full-size image for a moment, so each arena keeps tens of MB
it will not return: with four decode threads a server under the in-flight budget of 200 MB grew by 475 MB, and by
208 MB with two arenas (tests/server/test_memory_per_operation.py, the alpha/palette attack). The budget counts
what requests hold; this keeps the allocator's slack from multiplying it. ``MALLOC_ARENA_MAX`` set in the
environment wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's arenas for threads created from now on; False where the C library is not glibc or the
    environment already decides."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: no mallopt arenas
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def trim_malloc() -> bool:
    """Return the free memory at the top of glibc's heaps to the system (after a model's session is freed); False
    where the C library has no malloc_trim."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
