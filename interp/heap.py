"""Handing freed heap pages back to the operating system between large steps."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

__all__ = ["release_freed_memory"]

_LIBC: Any = None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    glibc keeps freed small blocks (below its mmap threshold) in the heap, and one live block
    above them keeps the pages resident: work that frees many small temporaries between larger
    allocations that live on (stored shards, gradient points) makes RSS creep up although no
    tensor outlives its step. Costs about a millisecond.
    """
    global _LIBC
    if _LIBC is False or not sys.platform.startswith("linux"):
        return
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        _LIBC = False
