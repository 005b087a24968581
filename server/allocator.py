"""Tune glibc's malloc before the server starts its threads, so that the in-flight budget bounds its memory.

The budget (``--max-inflight-pixels``) counts what requests hold; glibc's slack could multiply it in two ways:

- **Arenas.** glibc gives each thread that allocates under contention an arena of its own (up to 8 per core) and
  keeps what is freed there for reuse. The decode threads each hold a full-size image for a moment: with four
  decode threads a server under a budget of 200 MB grew by 475 MB, and by 208 MB with two arenas
  (tests/server/test_memory_per_operation.py, the alpha/palette attack).
- **The mmap threshold.** A block at or above the threshold is mapped on its own and given back when freed; one
  below it comes from an arena and stays there. glibc raises the threshold to the size of each mapped block that
  is freed (up to 32 MiB), so after the first big image the next ones, and libjpeg's 32 MB coefficient buffers of
  a progressive 16 MP JPEG, stayed in the arenas: that attack grew RSS by 327-424 MB under the 200 MB budget,
  and by 194-201 MB with the threshold fixed at 4 MiB (requests/s of 640x480 and 1920x1080 JPEGs unchanged
  within the noise, docs/reliability.md).

``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_`` set in the environment win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

# mallopt's parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):  # musl, macOS: no mallopt or malloc_trim
        return None


def _mallopt(parameter: int, value: int, variable: str) -> bool:
    if variable in os.environ:
        return False
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(parameter, value))


def configure_malloc(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD_BYTES) -> dict[str, bool]:
    """Cap glibc's arenas (for threads created from now on) and fix its mmap threshold; each value False where
    the C library is not glibc or the environment already decides."""
    return {"arenas": _mallopt(M_ARENA_MAX, arenas, "MALLOC_ARENA_MAX"),
            "mmap_threshold": _mallopt(M_MMAP_THRESHOLD, mmap_threshold, "MALLOC_MMAP_THRESHOLD_")}


def trim_malloc() -> bool:
    """Return the free memory at the top of glibc's heaps to the system (after a model's session is freed); False
    where the C library has no malloc_trim."""
    malloc_trim = _libc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))
