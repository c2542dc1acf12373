"""Hand memory freed by the flush back to the operating system (glibc only).

Each flush allocates and frees a few megabytes of columns on the flush thread and the store's
writer thread. glibc keeps such freed memory in per-thread arenas instead of returning it, and
its mmap threshold rises with each large free, so a long run's RSS crept up with its length
(about 60 MiB more for 10,000,000 points than for 100,000) although nothing was still in use.
``malloc_trim(0)`` after a flush returns it; elsewhere (macOS, musl, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_trim = _find_trim()


def release_free_memory() -> None:
    """Return free heap memory of every arena to the system (a no-op where unsupported)."""
    if _trim is not None:
        _trim(0)
