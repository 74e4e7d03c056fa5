"""Giving the memory a process has freed back to the operating system.

Allocators keep freed memory for reuse: glibc's malloc in its arenas (the main one and one
per thread that allocated, up to eight per core), Arrow's default pool (mimalloc or jemalloc)
in segments of its own. A process that allocates in bursts then stays at its peak long
after: a gateway worker writing a prediction-log segment every few seconds (Parquet encoding
and zstd buffers from Arrow's pool), the monitor reading a day of segments. :func:`give_back`
after such a burst returns the free pages; what is still in use stays where it is.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from typing import Any

__all__ = ["give_back"]


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None


def give_back() -> float:
    """Return the free memory of Arrow's pool (if pyarrow is loaded) and of every glibc arena
    to the operating system; the seconds it took.

    It holds each arena's lock while it trims that arena (about a millisecond for tens of
    MiB), so call it after a burst of allocations, not per request.
    """
    start = time.perf_counter()
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return time.perf_counter() - start
