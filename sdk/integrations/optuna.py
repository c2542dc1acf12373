"""Optuna: every trial a runtel run, grouped under a sweep run for the study.

``study.optimize(objective, callbacks=[RuntelCallback(project="p", metric_name="val/acc")])`` records each
finished trial. Decorate the objective with ``cb.track_in_runtel()`` to have the trial's run open (and
``runtel.current_run()`` return it, per thread under ``n_jobs > 1``) while the objective runs, so it can
log curves and artifacts; a trial whose exception ends ``optimize`` is then recorded too. A study kept in
an Optuna storage (SQLite, RDB, journal file) continues the same sweep run when resumed after a crash:
the sweep id is derived from the storage and the study name. Layout: see docs/sweeps.md.
Needs ``pip install runtel[optuna]``.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from runtel.errors import MissingExtraError

try:
    import optuna
    from optuna.trial import FrozenTrial, Trial, TrialState
except ImportError as exc:
    raise MissingExtraError(
        f"runtel.integrations.optuna needs the optuna package ({exc}): pip install runtel[optuna]"
    ) from exc

from runtel._current import use_run
from runtel.integrations._hparams import storable_params
from runtel.integrations._sweep import Direction, SweepRecorder
from runtel.integrations._sweep import TrialState as RunTrialState
from runtel.run import Run
from runtel.sweep import stable_sweep_id

_T = TypeVar("_T")
_STATES: dict[TrialState, RunTrialState] = {
    TrialState.COMPLETE: "completed",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}
#: Distinguishes in-memory storages of this process from those of any other (they cannot be resumed).
_PROCESS_SALT = uuid.uuid4().hex


class RuntelCallback:
    """An Optuna callback recording every finished trial as a run, and the study as a sweep run.

    ``metric_name`` names the objective (a list for a multi-objective study). Other keyword arguments
    (``project``, ``base_dir``, ``exporters``, ``tags``...) are those of :func:`runtel.init`, used for
    the sweep run and every trial run. The sweep run stays open while the callback is in use: call
    :meth:`finish` (or use the callback as a context manager) when the study is done; the exit hook
    finishes it otherwise.
    """

    def __init__(
        self,
        project: str | None = None,
        metric_name: str | Sequence[str] = "value",
        **init_kwargs: Any,
    ) -> None:
        self._metrics = [metric_name] if isinstance(metric_name, str) else list(metric_name)
        self._init_kwargs = {"project": project, **init_kwargs}
        self._lock = threading.Lock()
        self._recorders: dict[str, SweepRecorder] = {}
        #: Trial runs opened by ``track_in_runtel``, waiting for the callback: (sweep id, number) -> run.
        self._open: dict[tuple[str, int], Run] = {}
        #: Trials already recorded by ``track_in_runtel`` (failures), which the callback must skip.
        self._recorded: set[tuple[str, int]] = set()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        recorder = self._recorder(study)
        key = (recorder.sweep_id, trial.number)
        with self._lock:
            if key in self._recorded:
                self._recorded.discard(key)
                return
            run = self._open.pop(key, None)
        if run is None:
            run = recorder.start_trial(trial.number)
        error = trial.system_attrs.get("fail_reason") if trial.state == TrialState.FAIL else None
        self._end(recorder, study, run, trial, _STATES.get(trial.state, "failed"), error)

    def track_in_runtel(self) -> Callable[[Callable[[Trial], _T]], Callable[[Trial], _T]]:
        """Decorator for the objective: the trial's run is open and current while it runs."""

        def decorator(objective: Callable[[Trial], _T]) -> Callable[[Trial], _T]:
            @functools.wraps(objective)
            def wrapper(trial: Trial) -> _T:
                recorder = self._recorder(trial.study)
                key = (recorder.sweep_id, trial.number)
                run = recorder.start_trial(trial.number)
                with self._lock:
                    self._open[key] = run
                try:
                    with use_run(run):
                        return objective(trial)
                except optuna.TrialPruned:
                    raise  # the callback records it: Optuna always calls callbacks for pruned trials
                except (Exception, KeyboardInterrupt):
                    # Optuna marks the trial FAIL, and calls callbacks only if ``catch`` names the error.
                    with self._lock:
                        self._open.pop(key, None)
                        self._recorded.add(key)
                    self._end(recorder, trial.study, run, _running(trial), "failed", traceback.format_exc())
                    raise

            return wrapper

        return decorator

    def finish(self) -> None:
        """Finish every sweep run this callback opened."""
        with self._lock:
            recorders = list(self._recorders.values())
        for recorder in recorders:
            recorder.finish()

    def __enter__(self) -> RuntelCallback:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def _recorder(self, study: optuna.Study) -> SweepRecorder:
        storage = _storage_key(study)
        sweep_id = stable_sweep_id("optuna", storage, study.study_name)
        with self._lock:
            recorder = self._recorders.get(sweep_id)
            if recorder is None:
                directions: list[Direction | None] = [
                    "maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize"
                    for d in study.directions
                ]
                config = {
                    "sweep": {
                        "engine": "optuna",
                        "study_name": study.study_name,
                        "metrics": self._metrics,
                        "directions": directions,
                        "sampler": type(study.sampler).__name__,
                        "pruner": type(study.pruner).__name__,
                        "storage": _redacted(storage),
                    }
                }
                recorder = self._recorders[sweep_id] = SweepRecorder(
                    sweep_id=sweep_id,
                    name=study.study_name,
                    metrics=self._metrics,
                    directions=directions,
                    config=config,
                    init_kwargs=self._init_kwargs,
                )
            return recorder

    def _end(
        self,
        recorder: SweepRecorder,
        study: optuna.Study,
        run: Run,
        trial: FrozenTrial,
        state: RunTrialState,
        error: str | None,
    ) -> None:
        if trial.params:
            run.log_params(storable_params(trial.params))
        steps = sorted(trial.intermediate_values)
        for step in steps:
            run.log({f"intermediate/{self._metrics[0]}": trial.intermediate_values[step]}, step=step)
        values = trial.values if state != "failed" else None
        step = steps[-1] if steps else 0
        recorder.end_trial(run, trial.number, state, values, error=error, step=step, best=_best(study))


def _running(trial: Trial) -> FrozenTrial:
    """The stored state of a trial still running (its params and reported values so far)."""
    for frozen in trial.study.get_trials(deepcopy=False):
        if frozen.number == trial.number:
            return frozen
    raise LookupError(f"trial {trial.number} is not in study {trial.study.study_name!r}")


def _best(study: optuna.Study) -> tuple[int, float] | None:
    """Optuna's best trial (single objective), counting trials finished in earlier sessions too."""
    if len(study.directions) != 1:
        return None
    try:
        best = study.best_trial
    except ValueError:  # no completed trial yet
        return None
    return best.number, float(best.values[0])


def _storage_key(study: optuna.Study) -> str:
    """Where the study lives: an RDB URL (SQLite paths made absolute), a journal file, or this process."""
    storage: Any = study._storage  # Optuna has no public accessor for a study's storage
    while not hasattr(storage, "url") and hasattr(storage, "_backend"):
        storage = storage._backend
    url = getattr(storage, "url", None)
    if isinstance(url, str):
        prefix, sep, path = url.partition(":///")
        if prefix.startswith("sqlite") and sep and path and not path.startswith(":memory:"):
            return f"{prefix}:///{os.path.abspath(path)}"
        return url
    journal = getattr(storage, "_file_path", None)
    if isinstance(journal, str):
        return f"journal:{os.path.abspath(journal)}"
    return f"memory:{_PROCESS_SALT}:{id(storage)}"


def _redacted(storage: str) -> str:
    """The storage URL without a password, fit for the sweep run's params."""
    return re.sub(r"//([^/:@]*):[^/@]*@", r"//\1:***@", storage)
