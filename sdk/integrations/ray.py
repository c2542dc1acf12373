"""Ray Tune: every trial a runtel run, grouped under a sweep run for the experiment.

``tune.RunConfig(callbacks=[RuntelLoggerCallback(project="p", metric="val/acc", mode="max")])``. A Tune
callback runs in the driver, so the trials of every node land in the driver's store. What a trial
reports (``ray.tune.report``; Ray Train's ``ray.train.report`` from a trainer run inside a Tune trial
with Ray's ``TuneReportCallback``) is logged at step ``training_iteration``; Ray's own bookkeeping keys
(times, host, pid, ...) are left out. Checkpoints (Tune's, and Ray Train's passed on as a path) become
versions of the trial run's ``checkpoint`` artifact, a retry after a failure is counted in the
``ray/restarts`` series of the same run, and a trial that errors ends ``failed``. The sweep and trial
ids derive from the experiment's storage path and the trial id, so an experiment continued with
``Tuner.restore`` continues the same runs. Layout: see docs/sweeps.md. Needs ``pip install runtel[ray]``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Literal

from runtel.errors import MissingExtraError

try:
    from ray.tune.experiment import Trial
    from ray.tune.logger import LoggerCallback
    from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS
except ImportError as exc:
    raise MissingExtraError(
        f"runtel.integrations.ray needs ray[tune] ({exc}): pip install runtel[ray]"
    ) from exc

import runtel
from runtel.integrations._hparams import storable_params
from runtel.integrations._sweep import Direction, SweepRecorder, TrialState
from runtel.records import flatten_params
from runtel.run import Run
from runtel.sweep import SweepRef, stable_sweep_id

log = logging.getLogger("runtel")

#: The result key Tune counts reports with (``ray.tune.result.TRAINING_ITERATION``): the step.
TRAINING_ITERATION = "training_iteration"
#: Where Ray Train's ``TuneReportCallback`` puts a reported checkpoint's path in the Tune result.
TRAIN_CHECKPOINT_KEY = "checkpoint_path"
#: Keys Tune adds to every result: bookkeeping, not something the trainable reported.
_RAY_KEYS = frozenset(
    {*AUTO_RESULT_KEYS, *DEBUG_METRICS, "done", "experiment_tag", "should_checkpoint", TRAIN_CHECKPOINT_KEY}
)


class RuntelLoggerCallback(LoggerCallback):
    """A Ray Tune ``LoggerCallback`` recording each trial as a run, and the experiment as a sweep run.

    ``metric`` and ``mode`` (as given to ``TuneConfig``) name the objective: the sweep run then holds it
    per trial with the running best. Other keyword arguments (``base_dir``, ``exporters``, ``tags``...)
    are those of :func:`runtel.init`.
    """

    def __init__(
        self,
        project: str | None = None,
        metric: str | None = None,
        mode: Literal["min", "max"] | None = None,
        **init_kwargs: Any,
    ) -> None:
        self._metric = metric
        self._direction: Direction | None = {"min": "minimize", "max": "maximize", None: None}[mode]
        self._init_kwargs = {"project": project, **init_kwargs}
        self._reset()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state (for ``Tuner.restore``): settings only."""
        return {"metric": self._metric, "direction": self._direction, "init_kwargs": self._init_kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._metric, self._direction = state["metric"], state["direction"]
        self._init_kwargs = state["init_kwargs"]
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._recorder: SweepRecorder | None = None
        self._runs: dict[str, Run] = {}
        self._numbers: dict[str, int] = {}
        self._last: dict[str, dict[str, float]] = {}
        self._skipped: set[str] = set()

    def log_trial_start(self, trial: Trial) -> None:
        self._trial_run(trial)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        run = self._trial_run(trial)
        path = result.get(TRAIN_CHECKPOINT_KEY)
        if isinstance(path, str):
            self._train_checkpoint(run, trial, path)
        metrics = self._reported(result)
        step = result.get(TRAINING_ITERATION)
        run.log(metrics, step=int(step) if isinstance(step, int) else None)
        if self._metric is not None and self._metric in metrics:
            self._last[trial.trial_id] = {self._metric: metrics[self._metric]}

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        """A failed trial Tune retries (``FailureConfig(max_failures=...)``): same run, one restart more."""
        run = self._trial_run(trial)
        run.log({"ray/restarts": int(trial.num_failures)}, step=run.step)

    def on_checkpoint(
        self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any
    ) -> None:
        """The checkpoint's files as a new version of the trial run's ``checkpoint`` artifact."""
        run = self._trial_run(trial)
        try:
            with checkpoint.as_directory() as local:
                run.log_artifact(local, "checkpoint", metadata={"ray_path": str(checkpoint.path)})
        except Exception:  # a checkpoint that cannot be read must not stop the experiment
            log.exception("runtel: checkpoint %s of trial %s not recorded", checkpoint.path, trial.trial_id)

    def _train_checkpoint(self, run: Run, trial: Trial, path: str) -> None:
        """A Ray Train checkpoint passed on by ``TuneReportCallback`` (as a path) as an artifact version."""
        if not os.path.isdir(path):
            log.warning(
                "runtel: checkpoint %s of trial %s is not a local folder: not copied", path, trial.trial_id
            )
            return
        run.log_artifact(path, "checkpoint", metadata={"ray_path": path})

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        with self._lock:
            run = self._runs.pop(trial.trial_id, None)
        if run is None or self._recorder is None:
            return
        last = self._last.pop(trial.trial_id, {})
        values = [last[self._metric]] if self._metric is not None and self._metric in last else None
        error = _error_text(trial) if failed else None
        state: TrialState = "failed" if failed else "completed"
        self._recorder.end_trial(
            run, self._numbers[trial.trial_id], state, values, error=error, step=run.step
        )

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self._recorder is not None:
            self._recorder.finish()

    def _trial_run(self, trial: Trial) -> Run:
        with self._lock:
            run = self._runs.get(trial.trial_id)
            if run is not None:
                return run
            recorder = self._sweep(trial)
            number = self._numbers.setdefault(trial.trial_id, _trial_number(trial, len(self._numbers)))
            sweep = recorder.sweep_run()
            run = runtel.init(
                **{**self._init_kwargs, "name": f"{recorder.name}-{trial.trial_id}"},
                config=storable_params(trial.config),
                sweep=SweepRef.trial_of(sweep, number),
                run_id=stable_sweep_id("ray-trial", recorder.sweep_id, trial.trial_id),
            )
            self._runs[trial.trial_id] = run
            return run

    def _sweep(self, trial: Trial) -> SweepRecorder:
        if self._recorder is None:
            storage = trial.storage
            if storage is not None:
                path, name = str(storage.experiment_fs_path), str(storage.experiment_dir_name)
            else:  # a trial made outside a Tuner: its id's prefix names the experiment
                path = name = str(trial.trial_id).rpartition("_")[0] or "ray"
            config = {
                "sweep": {
                    "engine": "ray",
                    "experiment": name,
                    "storage": path,
                    "metrics": [self._metric] if self._metric else [],
                    "directions": [self._direction] if self._direction else [],
                }
            }
            self._recorder = SweepRecorder(
                sweep_id=stable_sweep_id("ray", path),
                name=name,
                metrics=[self._metric] if self._metric else [],
                directions=[self._direction],
                config=config,
                init_kwargs=self._init_kwargs,
            )
        return self._recorder

    def _reported(self, result: Mapping[str, Any]) -> dict[str, float]:
        """The numbers the trainable reported (nested dicts as ``a/b``); other values are warned once."""
        metrics: dict[str, float] = {}
        for key, value in flatten_params({k: v for k, v in result.items() if k not in _RAY_KEYS}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                if key not in self._skipped:
                    self._skipped.add(key)
                    log.warning(
                        "runtel: Ray result %r is a %s, not a number: not logged", key, type(value).__name__
                    )
                continue
            metrics[key] = value if isinstance(value, int) and abs(value) < 2**53 else float(value)
        return metrics


def _trial_number(trial: Trial, seen: int) -> int:
    """Tune's trial ids end in a counter (``<experiment>_00003``); else the order trials were first seen."""
    suffix = str(trial.trial_id).rpartition("_")[2]
    return int(suffix) if suffix.isdigit() else seen


def _error_text(trial: Trial) -> str:
    """Ray's traceback of the trial's last error: the driver's local copy, else the one in storage."""
    local = trial.error_file
    if local is not None and os.path.isfile(local):
        with open(local, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    error = trial.get_error()
    return str(error) if error is not None else f"trial {trial.trial_id} failed (Ray kept no error text)"


__all__ = ["RuntelLoggerCallback"]
