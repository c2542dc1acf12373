"""Logging order across series, rebuilt from each series' points and their times.

A run's points are stored per series, each series in logging order; across series only the times
say which came first. Calls a few hundred nanoseconds apart share one float64 timestamp (its
resolution this century is 238 ns), and other trackers' clocks tick in milliseconds, so times tie
often. Among equal times the k-th point of each series at that time is taken to belong to the
k-th call: the order is by time, then that rank, then series, which is exact for calls that log
the same names, and keeps each series' own order among its points of one time (a step that went
back stays after the one before it), wherever in the series they are.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def logging_order(times: npt.NDArray[np.float64], index: npt.NDArray[np.int32]) -> npt.NDArray[np.intp]:
    """Positions of points given series by series (``index`` grouped, each series in its own order)
    in the order they were logged."""
    n = times.size
    if n == 0:
        return np.zeros(0, np.intp)
    # Each point's rank among the points of its series at its time, counted in the series' order.
    by_tie = np.lexsort((np.arange(n), times, index))  # series, then time, then position
    tied_times, tied_index = times[by_tie], index[by_tie]
    new_tie = np.ones(n, bool)
    new_tie[1:] = (tied_times[1:] != tied_times[:-1]) | (tied_index[1:] != tied_index[:-1])
    positions = np.arange(n)
    rank = np.empty(n, np.intp)
    rank[by_tie] = positions - np.maximum.accumulate(np.where(new_tie, positions, 0))
    return np.lexsort((index, rank, times))
