"""The pure-Python twin of ``runtel._hotpath_c``: the same base of :class:`runtel.Run`, where the C
extension is not built (or ``RUNTEL_PURE_PYTHON=1``). ``Run.log`` is then ``Run._log_general``
itself; calls are queued as tuples, which the flush turns into columns (the C version fills the
columns as it goes: :class:`PointsBlock`)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from runtel._values import MAX_STEP

#: Guards the lazy restart of implicit steps after an explicit one (rare: one lock for all runs).
_STEPS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class PointsBlock:
    """Points of consecutive calls as columns (the C version's blocks; never made by this twin)."""

    index: bytearray
    records: bytearray
    grouped: bytearray | None
    series: bytearray | None
    calls: int


class HotPath:
    """Base of :class:`runtel.Run`: the queue, the step and the span ``log`` writes with."""

    _queue: deque[Any]
    _layouts: dict[tuple[Any, ...], tuple[int, ...]]
    _span_id: int = 0
    _finished: bool = False
    _silent: bool = False
    _detached: bool = False
    _wake_at: int = 2**62
    _last_step: int = -1
    #: Implicit steps still to hand out (a C-speed iterator: ``next`` is atomic under the GIL, so
    #: steps stay unique across threads); None after an explicit step, restarted lazily from it.
    _steps: Iterator[int] | None = None

    if TYPE_CHECKING:  # Run's own

        def _batch_queued(self, queued: int) -> None: ...

    def _next_step(self) -> int | None:
        """The next implicit step, taken; None past the largest int64."""
        try:
            at = next(self._steps)  # type: ignore[arg-type]  # None: TypeError, caught
        except (TypeError, StopIteration):  # after an explicit step, or past the last int64
            with _STEPS_LOCK:
                steps = self._steps
                if steps is None:
                    steps = self._steps = _steps_from(self._last_step + 1)
                found = next(steps, None)
            if found is None:
                return None
            at = found
        self._last_step = at
        return at

    def _explicit_step(self, at: int) -> None:
        """Record an explicit (validated) step: implicit steps continue after it."""
        self._steps = None
        self._last_step = at

    def _queue_call(
        self, at: int, when: float, span: int, ids: tuple[int, ...], values: tuple[float, ...]
    ) -> None:
        """Queue one validated call. Tuples of numbers leave the garbage collector's tracking."""
        self._queue.append((at, when, span, ids, values))

    def _emit(self, record: Any) -> None:
        """Queue a non-metric record in order with the points logged before it."""
        self._queue.append(record)

    def _take_open_block(self) -> None:
        """Nothing to do here: every call is already in the queue."""

    def _queued_calls(self) -> int:
        return len(self._queue)


def _steps_from(start: int) -> Iterator[int]:
    """Implicit steps ``start, start + 1, ...`` up to the largest int64 (a C-speed iterator)."""
    if start > MAX_STEP:
        return iter(())
    return chain(range(start, MAX_STEP), (MAX_STEP,))
