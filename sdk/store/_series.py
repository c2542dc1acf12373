"""Append-only binary metric series: one file per metric, fixed-width records (``SERIES_DTYPE``).

A crash can leave at most one partial record at the end of a file; readers ignore it and
a writer re-opening the file truncates it. Metric names map to file names through
``metrics/index.json`` (written atomically before any data of a new series), so any
Unicode name, names with ``/`` and names differing only in case work on every file system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from runtel.records import SERIES_DTYPE
from runtel.store._jsonio import read_json, write_json_atomic
from runtel.store._layout import SERIES_INDEX

RECORD_SIZE = SERIES_DTYPE.itemsize
_MAX_OPEN_FILES = 128


def read_index(metrics_dir: Path) -> dict[str, str]:
    document = read_json(metrics_dir / SERIES_INDEX, default={"series": {}})
    return dict(document.get("series", {}))


def read_series(path: Path) -> npt.NDArray[np.void]:
    """Every whole record of a series file (a torn tail is ignored)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return np.empty(0, dtype=SERIES_DTYPE)
    return np.fromfile(path, dtype=SERIES_DTYPE, count=size // RECORD_SIZE)


def truncate_torn_tail(path: Path) -> None:
    size = path.stat().st_size
    whole = size - size % RECORD_SIZE
    if whole != size:
        os.truncate(path, whole)


class SeriesWriter:
    """Appends records to a run's series files; used only from the local store's worker thread."""

    def __init__(self, metrics_dir: Path) -> None:
        self._dir = metrics_dir
        self._index = read_index(metrics_dir)
        self._handles: dict[str, BinaryIO] = {}
        for file_name in self._index.values():
            path = metrics_dir / file_name
            if path.exists():
                truncate_torn_tail(path)

    def append(self, columns: dict[str, npt.NDArray[np.void]]) -> None:
        """Append each metric's records; new metric names are indexed first."""
        new = [name for name in columns if name not in self._index]
        if new:
            for name in new:
                self._index[name] = f"s{len(self._index) + 1:06d}.bin"
            write_json_atomic(self._dir / SERIES_INDEX, {"version": 1, "series": self._index})
        for name, records in columns.items():
            self._handle(self._index[name]).write(records.tobytes())

    def flush(self) -> None:
        for handle in self._handles.values():
            handle.flush()

    def close(self, *, fsync: bool = True) -> None:
        for handle in self._handles.values():
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
            handle.close()
        self._handles.clear()

    def _handle(self, file_name: str) -> BinaryIO:
        handle = self._handles.get(file_name)
        if handle is None:
            if len(self._handles) >= _MAX_OPEN_FILES:
                oldest = next(iter(self._handles))
                self._handles.pop(oldest).close()
            handle = (self._dir / file_name).open("ab")
            self._handles[file_name] = handle
        return handle


def series_stats(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-metric summary rebuilt from the series files (a crashed run has no summary.json)."""
    stats: dict[str, dict[str, Any]] = {}
    for name, file_name in read_index(metrics_dir).items():
        records = read_series(metrics_dir / file_name)
        if records.size:
            values = records["value"]
            stats[name] = {
                "count": int(values.size),
                "min": float(np.fmin.reduce(values)),
                "max": float(np.fmax.reduce(values)),
                "last": float(values[-1]),
                "last_step": int(records["step"][-1]),
                "last_time": float(records["time"][-1]),
            }
    return stats
