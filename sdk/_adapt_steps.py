"""Step rules of the adaptation step: moving points a backend would drop, overwrite or evict.

Two different things happen and are reported apart:

- ``step_shifted``: a series (or, for a backend with one step counter, the run) went back to an
  earlier step (a resume, a re-evaluation). The segment is shifted forward to follow on, and the
  offset is kept for the rest of the run, so the spacing of later steps is kept. Every point moved
  by an offset is counted.
- ``step_moved``: a point at a step its series already holds (two samples at one step: a system
  metric sampled twice during a long step), or at a step the backend's counter has already passed
  because of an earlier move. Only that point moves, to the next free step; nothing after it does.

Whole batches are fitted with numpy: per series, the steps sent are a running maximum
(``np.maximum.accumulate``) of the steps with their offsets, split only where a series goes back.
``fit_one`` is the same rule, point by point, for epochs, figures and histograms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from runtel.exporters.base import Capabilities, StepRule

if TYPE_CHECKING:
    from runtel._adapt import Report

_MAX_EXAMPLES = 5
_RUN = ""  # the state key of a backend's run-wide step counter


def _gap(rule: StepRule) -> int | None:
    return {"any": None, "non_decreasing": 0, "strictly_increasing": 1}[rule]


class StepFitter:
    """Per-series (and run-wide) step state of one exporter's run."""

    def __init__(self, capabilities: Capabilities, report: Report) -> None:
        self._series_gap = _gap(capabilities.step_rule)
        self._run_gap = _gap(capabilities.run_step_rule)
        self.active = self._series_gap is not None or self._run_gap is not None
        self._report = report
        self._offset: dict[str, int] = {}  # per series, or _RUN for a run-wide counter
        self._highest: dict[str, int] = {}  # highest original step since the scope last went back
        self._last: dict[str, int] = {}  # last step sent, per series
        self._last_original: dict[str, int] = {}
        self._run_last: int | None = None

    # ------------------------------------------------------------------ one point
    def fit_one(self, series: str, original: int) -> int:
        """The step to send a point of ``series`` logged at ``original`` at."""
        scope = _RUN if self._run_gap is not None else series
        required = self._required(series)
        offset = self._offset.get(scope, 0)
        highest = self._highest.get(scope)
        if highest is not None and original < highest:  # went back: shift from here on
            if required is not None:
                offset = max(offset, required - original)
            self._offset[scope] = offset
            self._highest[scope] = original
            sent = original + offset
            if sent != original:
                self._shifted(1, [_example(series, original, sent, "step went backwards")])
        else:
            self._highest[scope] = original if highest is None else max(highest, original)
            planned = original + offset
            sent = planned if required is None else max(planned, required)
            if sent != planned:
                self._moved(series, [original], [sent])
            elif offset:
                self._shifted(1, [])
        self._last[series] = sent
        self._last_original[series] = original
        self._run_last = sent if self._run_last is None else max(self._run_last, sent)
        return sent

    def _required(self, series: str) -> int | None:
        """The lowest step the backend takes next for ``series``."""
        required: int | None = None
        last = self._last.get(series)
        if self._series_gap is not None and last is not None:
            required = last + self._series_gap
        if self._run_gap is not None and self._run_last is not None:
            floor = self._run_last + self._run_gap
            required = floor if required is None else max(required, floor)
        return required

    # ------------------------------------------------------------------ a batch
    def fit(
        self, names: tuple[str, ...], index: npt.NDArray[np.int32], steps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """The steps to send a batch at; ``steps`` itself when none moves."""
        if not steps.size:
            return steps
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        bounds = np.flatnonzero(sorted_index[1:] != sorted_index[:-1]) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [steps.size]))
        series = [names[i] for i in sorted_index[starts].tolist()]
        fast = self._fit_clean(series, order, starts, ends, steps)
        if fast is not None:
            return fast
        if self._run_gap is not None:  # one counter for all series: point by point, in logging order
            return self._fit_run(names, index, steps)
        sorted_steps = steps[order]
        sent_sorted = np.empty_like(sorted_steps)
        for name, start, end in zip(series, starts.tolist(), ends.tolist(), strict=True):
            sent_sorted[start:end] = self._fit_series(name, sorted_steps[start:end])
        sent = np.empty_like(steps)
        sent[order] = sent_sorted
        return sent

    def _fit_clean(
        self,
        series: list[str],
        order: npt.NDArray[np.intp],
        starts: npt.NDArray[np.intp],
        ends: npt.NDArray[np.intp],
        steps: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64] | None:
        """The batch with its offsets when that breaks no rule (the usual case), else ``None``."""
        floor = np.iinfo(np.int64).min // 4
        if self._run_gap is not None:
            offsets = np.full(steps.size, self._offset.get(_RUN, 0), dtype=np.int64)
            highest = self._highest.get(_RUN)
            if highest is not None and steps[0] < highest:
                return None
            if (np.diff(steps) < 0).any():
                return None
            if self._run_last is not None and steps[0] + offsets[0] < self._run_last + self._run_gap:
                return None
        else:
            per_series = np.array([self._offset.get(name, 0) for name in series], dtype=np.int64)
            offsets = np.zeros(steps.size, dtype=np.int64)
            if per_series.any():
                offsets[order] = np.repeat(per_series, ends - starts)
        sent = steps + offsets
        sorted_sent = sent[order]
        if self._series_gap is not None:
            previous = np.empty_like(sorted_sent)
            previous[1:] = sorted_sent[:-1]
            previous[starts] = [self._last.get(name, floor) for name in series]
            if (sorted_sent < previous + self._series_gap).any():
                return None
            if self._run_gap is None:
                sorted_steps = steps[order]
                previous[1:] = sorted_steps[:-1]
                previous[starts] = [self._highest.get(name, floor) for name in series]
                if (sorted_steps < previous).any():
                    return None
        last_sent = sorted_sent[ends - 1].tolist()
        last_original = steps[order][ends - 1].tolist()
        for name, value, original in zip(series, last_sent, last_original, strict=True):
            self._last[name] = value
            self._last_original[name] = original
            if self._run_gap is None:
                self._highest[name] = original
        if self._run_gap is not None:
            self._highest[_RUN] = int(steps[-1])
        top = int(sent.max())
        self._run_last = top if self._run_last is None else max(self._run_last, top)
        moved = int(np.count_nonzero(offsets))
        if moved:
            self._shifted(moved, [])
            return sent
        return steps

    def _fit_run(
        self, names: tuple[str, ...], index: npt.NDArray[np.int32], steps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """``fit_one`` over a batch, in logging order, with the state in local lists (one counter
        for all series has no per-series split to vectorise)."""
        series_gap, run_gap = self._series_gap, self._run_gap
        assert run_gap is not None
        offset = self._offset.get(_RUN, 0)
        highest = self._highest.get(_RUN)
        run_last = self._run_last
        last = [self._last.get(name) for name in names]
        last_original = [self._last_original.get(name) for name in names]
        sent_steps = steps.tolist()
        shifted: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []
        shifted_count = moved_count = 0
        for position, (i, original) in enumerate(zip(index.tolist(), sent_steps, strict=True)):
            required = None if run_last is None else run_last + run_gap
            previous = last[i]
            if (
                series_gap is not None
                and previous is not None
                and (required is None or previous + series_gap > required)
            ):
                required = previous + series_gap
            if highest is not None and original < highest:
                if required is not None and required - original > offset:
                    offset = required - original
                highest = original
                sent = original + offset
                if sent != original:
                    shifted_count += 1
                    if len(shifted) < _MAX_EXAMPLES:
                        shifted.append(_example(names[i], original, sent, "step went backwards"))
            else:
                if highest is None or original > highest:
                    highest = original
                sent = original + offset
                if required is not None and sent < required:
                    moved_count += 1
                    if len(moved) < _MAX_EXAMPLES:
                        moved.append(
                            _example(names[i], original, required, _reason(last_original[i], original))
                        )
                    sent = required
                elif offset:
                    shifted_count += 1
            last[i], last_original[i] = sent, original
            if run_last is None or sent > run_last:
                run_last = sent
            sent_steps[position] = sent
        for name, value, original_value in zip(names, last, last_original, strict=True):
            if value is not None and original_value is not None:
                self._last[name], self._last_original[name] = value, original_value
        self._offset[_RUN], self._run_last = offset, run_last
        if highest is not None:
            self._highest[_RUN] = highest
        if moved_count:
            self._report.note("step_moved", moved_count, moved)
        if shifted_count:
            self._shifted(shifted_count, shifted)
        return np.asarray(sent_steps, dtype=np.int64)

    def _fit_series(self, name: str, steps: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """One series' steps in logging order (per-series rules only), split where it goes back."""
        gap = self._series_gap
        assert gap is not None
        offset = self._offset.get(name, 0)
        highest = self._highest.get(name)
        last = self._last.get(name)
        last_original = self._last_original.get(name)
        out = np.empty_like(steps)
        start = 0
        while start < steps.size:
            part = steps[start:]
            running = np.maximum.accumulate(part)
            if highest is not None:
                running = np.maximum(running, highest)
            prior = np.empty_like(part)
            prior[0] = part[0] if highest is None else highest
            prior[1:] = running[:-1]
            back = np.flatnonzero(part < prior)
            stop = int(back[0]) if back.size else part.size
            if stop:
                planned = part[:stop] + offset
                spread = np.arange(stop, dtype=np.int64) * gap
                rising = np.maximum.accumulate(planned - spread)
                if last is not None:
                    rising = np.maximum(rising, last + gap)
                sent = rising + spread
                moved = np.flatnonzero(sent != planned)
                if moved.size:
                    originals = part[:stop]
                    shown = moved[:_MAX_EXAMPLES].tolist()
                    before = [last_original if p == 0 else int(originals[p - 1]) for p in shown]
                    self._moved_many(
                        name,
                        int(moved.size),
                        [int(originals[p]) for p in shown],
                        [int(sent[p]) for p in shown],
                        before,
                    )
                if offset:
                    self._shifted(stop - int(moved.size), [])
                out[start : start + stop] = sent
                last, last_original = int(sent[-1]), int(part[stop - 1])
                highest = int(running[stop - 1])
            if stop == part.size:
                break
            original = int(part[stop])
            assert last is not None  # a series can only go back after a point
            offset = max(offset, last + gap - original)
            sent_back = original + offset
            self._shifted(1, [_example(name, original, sent_back, "step went backwards")])
            out[start + stop] = sent_back
            last, last_original, highest = sent_back, original, original
            start += stop + 1
        self._offset[name] = offset
        if highest is not None:
            self._highest[name] = highest
        if last is not None and last_original is not None:
            self._last[name], self._last_original[name] = last, last_original
            self._run_last = last if self._run_last is None else max(self._run_last, last)
        return out

    # ------------------------------------------------------------------ reports
    def _shifted(self, count: int, examples: list[dict[str, Any]]) -> None:
        self._report.note("step_shifted", count, examples)

    def _moved(self, series: str, originals: list[int], sent: list[int]) -> None:
        self._moved_many(series, len(originals), originals, sent, [self._last_original.get(series)])

    def _moved_many(
        self, series: str, count: int, originals: list[int], sent: list[int], before: list[int | None]
    ) -> None:
        examples = [
            _example(series, original, to, _reason(previous, original))
            for original, to, previous in zip(originals, sent, before, strict=True)
        ]
        self._report.note("step_moved", count, examples)


def _reason(previous_original: int | None, original: int) -> str:
    if previous_original == original:
        return "two points at one step"
    return "step taken by an earlier moved point"


def _example(series: str, step: int, sent_as: int, reason: str) -> dict[str, Any]:
    return {"metric": series, "step": step, "sent_as": sent_as, "reason": reason}
