"""What the Optuna and Ray integrations share: the sweep run and how a trial's outcome is recorded.

Series of the sweep run (step = trial number): ``objective/<metric>`` (completed trials), ``best/<metric>``
and ``best_trial`` (the best so far when that trial ended), ``trial_state`` (see :data:`TRIAL_STATES`).
A trial run holds the trial's params, ``intermediate/<metric>`` (reported values at their steps),
``objective/<metric>`` (its final value) and ``trial_state``; it ends ``completed`` (also when pruned:
``trial_state`` tells) or ``failed``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import runtel
from runtel.run import Run, active_runs
from runtel.sweep import SweepRef

TrialState = Literal["completed", "pruned", "failed"]
#: ``trial_state`` series values; a pruned trial's run ends ``completed``, a failed one ``failed``.
TRIAL_STATES: dict[TrialState, int] = {"completed": 0, "pruned": 1, "failed": 2}
Direction = Literal["minimize", "maximize"]

_OPEN: dict[str, Run] = {}
_OPEN_LOCK = threading.Lock()


class SweepRecorder:
    """Opens the sweep run on first use (resuming it when ``sweep_id`` is already in the store) and
    records trials into it; one lock guards the sweep run's bookkeeping across trial threads."""

    def __init__(
        self,
        *,
        sweep_id: str,
        name: str,
        metrics: Sequence[str],
        directions: Sequence[Direction | None],
        config: Mapping[str, Any],
        init_kwargs: Mapping[str, Any],
    ) -> None:
        self.sweep_id = sweep_id
        self.name = name
        self.metrics = list(metrics)
        self.directions = list(directions)
        self._config = dict(config)
        self._init_kwargs = dict(init_kwargs)
        self._lock = threading.Lock()
        self._run: Run | None = None
        self._best: tuple[int, float] | None = None

    def sweep_run(self) -> Run:
        """The sweep's run, shared by every recorder of this sweep id in the process."""
        with self._lock:
            if self._run is None:
                self._run = _open_sweep_run(self.sweep_id, self.name, self._config, self._init_kwargs)
            return self._run

    def start_trial(self, number: int, config: Mapping[str, Any] | None = None) -> Run:
        """A new run for trial ``number``, linked to the sweep."""
        sweep = self.sweep_run()
        kwargs = {**self._init_kwargs, "name": f"{self.name}-trial-{number}"}
        return runtel.init(config=config, sweep=SweepRef.trial_of(sweep, number), **kwargs)

    def end_trial(
        self,
        run: Run,
        number: int,
        state: TrialState,
        values: Sequence[float] | None,
        *,
        error: str | None = None,
        step: int = 0,
        best: tuple[int, float] | None = None,
    ) -> None:
        """Record the trial's outcome into its run (then finished) and into the sweep run."""
        final = _named(self.metrics, values)
        run.log({"trial_state": TRIAL_STATES[state], **{f"objective/{k}": v for k, v in final.items()}}, step)
        run.finish("failed" if state == "failed" else "completed", error=error)
        self.record_outcome(number, state, values, best)

    def record_outcome(
        self,
        number: int,
        state: TrialState,
        values: Sequence[float] | None,
        best: tuple[int, float] | None = None,
    ) -> None:
        """The trial's point in the sweep run's series; ``best`` overrides the tracked best (Optuna's own)."""
        final = _named(self.metrics, values)
        sweep = self.sweep_run()
        with self._lock:
            point: dict[str, float] = {"trial_state": TRIAL_STATES[state]}
            point.update({f"objective/{k}": v for k, v in final.items()})
            if best is None and state == "completed" and len(final) == 1:
                best = self._better(number, next(iter(final.values())))
            if best is not None:
                self._best = best
            if self._best is not None:
                point.update({f"best/{self.metrics[0]}": self._best[1], "best_trial": self._best[0]})
            sweep.log(point, step=number)

    def _better(self, number: int, value: float) -> tuple[int, float] | None:
        direction = self.directions[0] if self.directions else None
        if direction is None or math.isnan(value):
            return self._best
        if self._best is None:
            return number, value
        better = value < self._best[1] if direction == "minimize" else value > self._best[1]
        return (number, value) if better else self._best

    def finish(self) -> None:
        """Finish the sweep run (``runtel.finish`` at exit does it otherwise)."""
        with self._lock:
            run, self._run = self._run, None
        if run is not None:
            with _OPEN_LOCK:
                _OPEN.pop(self.sweep_id, None)
            run.finish()


def _named(metrics: Sequence[str], values: Sequence[float] | None) -> dict[str, float]:
    """Objective values by metric name (``value_<i>`` when the names do not match their count)."""
    if not values:
        return {}
    names = list(metrics) if len(metrics) == len(values) else [f"value_{i}" for i in range(len(values))]
    return {name: float(value) for name, value in zip(names, values, strict=True)}


def _open_sweep_run(
    sweep_id: str, name: str, config: Mapping[str, Any], init_kwargs: Mapping[str, Any]
) -> Run:
    with _OPEN_LOCK:
        run = _OPEN.get(sweep_id)
        if run is None or run not in active_runs():
            kwargs = {**init_kwargs, "name": name, "run_id": sweep_id}
            run = _OPEN[sweep_id] = runtel.init(config=dict(config), sweep=SweepRef(name), **kwargs)
        return run
