"""Per-series statistics of what a writer stored (count, min, max, last point), kept as columns.

One row per series number, updated once per written block by a few whole-array operations: with
10,000 series a block touches 10,000 rows, which dict-per-series bookkeeping did in ~0.3 s of
Python per million points. NaN-aware like the store's summary: a min or max ignores NaN values
unless a series holds nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt


class SeriesStats:
    """Statistics by series number; rows of numbers never written hold count 0."""

    def __init__(self, stored: Mapping[int, Mapping[str, Any]]) -> None:
        self.count = np.zeros(0, np.int64)
        self.min = np.zeros(0, np.float64)
        self.max = np.zeros(0, np.float64)
        self.last = np.zeros(0, np.float64)
        self.last_step = np.zeros(0, np.int64)
        self.last_time = np.zeros(0, np.float64)
        if stored:
            numbers = np.fromiter(stored, np.int64, len(stored))
            rows = list(stored.values())
            self.add(
                numbers,
                np.array([row["count"] for row in rows], np.int64),
                np.array([row["min"] for row in rows], np.float64),
                np.array([row["max"] for row in rows], np.float64),
                np.array([row["last"] for row in rows], np.float64),
                np.array([row["last_step"] for row in rows], np.int64),
                np.array([row["last_time"] for row in rows], np.float64),
            )

    def add(
        self,
        numbers: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
        mins: npt.NDArray[np.float64],
        maxs: npt.NDArray[np.float64],
        lasts: npt.NDArray[np.float64],
        last_steps: npt.NDArray[np.int64],
        last_times: npt.NDArray[np.float64],
    ) -> None:
        """One written block: each series (distinct ``numbers``) with its points' count, min, max, last."""
        self._grow(int(numbers.max()) + 1)
        fresh = self.count[numbers] == 0
        self.min[numbers] = np.where(fresh, mins, np.fmin(self.min[numbers], mins))
        self.max[numbers] = np.where(fresh, maxs, np.fmax(self.max[numbers], maxs))
        self.count[numbers] += counts
        self.last[numbers] = lasts
        self.last_step[numbers] = last_steps
        self.last_time[numbers] = last_times

    def as_dict(self, numbers: Mapping[str, int]) -> dict[str, dict[str, Any]]:
        """Metric name to its statistics (as ``summary.json`` holds them), for series with points."""
        known = [(name, number) for name, number in numbers.items() if number < self.count.size]
        rows = np.array([number for _, number in known], np.int64)
        columns = zip(
            self.count[rows].tolist(),
            self.min[rows].tolist(),
            self.max[rows].tolist(),
            self.last[rows].tolist(),
            self.last_step[rows].tolist(),
            self.last_time[rows].tolist(),
            strict=True,
        )
        return {
            name: {"count": c, "min": lo, "max": hi, "last": v, "last_step": s, "last_time": t}
            for (name, _), (c, lo, hi, v, s, t) in zip(known, columns, strict=True)
            if c
        }

    def next_step(self) -> int:
        """The step after the last one stored in any series (0 when nothing is)."""
        written = self.count > 0
        return int(self.last_step[written].max()) + 1 if written.any() else 0

    def _grow(self, size: int) -> None:
        if size <= self.count.size:
            return
        extra = max(size, 2 * self.count.size) - self.count.size
        for column in ("count", "min", "max", "last", "last_step", "last_time"):
            old = getattr(self, column)
            setattr(self, column, np.concatenate([old, np.zeros(extra, old.dtype)]))
