"""Handing freed memory back to the system.

After a peak (a busy day's manifest and page are megabytes), glibc keeps the freed heap
for reuse: its mmap threshold rises with each large block freed, so the next ones come
from a heap it does not shrink. `malloc_trim` gives it back (well under a millisecond).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):  # musl and others: nothing to do
        return None
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    if _TRIM is not None:
        _TRIM(0)
