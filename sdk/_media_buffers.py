"""Reused buffers for the pixel copies ``log_image`` takes: the training thread's main cost.

A fresh 256x256 RGB array is 48 pages the kernel must fault in and zero (and the flush's
``malloc_trim`` hands freed ones back), which made the copy cost several times the ``memcpy``. An
image only runtel holds (one ``log_image`` built) gives its buffer back here once the flush has
encoded it, and the next copy of that shape and dtype reuses it. At most ``MAX_POOLED_BYTES`` wait.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_POOLED_BYTES = 64 << 20
_free: dict[tuple[tuple[int, ...], str], deque[npt.NDArray[Any]]] = {}
_lock = threading.Lock()
_pooled = [0]  # bytes waiting in _free


def copy_of(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A private copy of ``array``, in a reused buffer when one of its shape and dtype waits."""
    pool = _free.get((array.shape, array.dtype.str))
    if pool:
        try:
            buffer = pool.pop()
        except IndexError:  # taken by another thread meanwhile
            pass
        else:
            with _lock:
                _pooled[0] -= buffer.nbytes
            np.copyto(buffer, array)
            return buffer
    return np.array(array, copy=True)


def give_back(array: npt.NDArray[Any]) -> None:
    """Hand ``array`` (a view's base, if a view) back for reuse; nothing may use it afterwards."""
    root = array if array.base is None else array.base
    if not isinstance(root, np.ndarray) or not root.flags.c_contiguous or not root.flags.writeable:
        return
    with _lock:
        if _pooled[0] + root.nbytes > MAX_POOLED_BYTES:
            return
        _pooled[0] += root.nbytes
    _free.setdefault((root.shape, root.dtype.str), deque()).append(root)
