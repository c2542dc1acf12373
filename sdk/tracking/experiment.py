"""``ExperimentTracker``: the experiment seed's API as a thin facade over one :class:`runtel.Run`.

Everything logged goes through the run (hot path, store, exporters); everything read comes back
from the store (``runtel.StoredRun``), so a tracker keeps no copy of the points it logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

import runtel
from runtel.errors import ConfigError, RunFinishedError
from runtel.run import Run
from runtel.store.artifacts import ArtifactStore, ArtifactVersion
from runtel.store.query import Store, StoredRun
from runtel.tracking._autoviz import SYSTEM_PREFIX, AutoVisualizer, plotted_series
from runtel.tracking.visualizer import MetricVisualizer, require_matplotlib

__all__ = ["ArtifactVersion", "ExperimentTracker"]

#: Default number of ``log_metrics`` calls between automatic renders (``RUNTEL_AUTOVIZ_EVERY``).
AUTOVIZ_EVERY = 100
_AUTOVIZ_ENV = "RUNTEL_AUTOVIZ_EVERY"
#: Statuses of a run whose process ended without finishing it: ``open`` re-opens these for resume.
RESUMABLE = ("crashed", "killed")


class ExperimentTracker:
    """One experiment = one run. Status: ``created`` until the first ``log_*`` call, then ``running``,
    then ``completed`` (``finish``) or ``failed`` (an exception leaving the ``with`` block).

    ``base_dir`` defaults to ``RUNTEL_BASE_DIR`` or ``runtel_runs``. ``backend`` names an exporter
    (``"mlflow"``, ``"wandb"``, ``"tensorboard"``...) the run also writes to; an unknown one raises
    ``ConfigError`` before anything is created. With ``auto_visualize``, plots are redrawn in the
    background every ``auto_visualize_every`` ``log_metrics`` calls (default 100, or
    ``RUNTEL_AUTOVIZ_EVERY``) and once more at ``finish``.
    """

    def __init__(
        self,
        experiment_name: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        auto_visualize: bool = True,
        backend: str | None = None,
        *,
        auto_visualize_every: int | None = None,
        project: str | None = None,
    ) -> None:
        every = _autoviz_every(auto_visualize_every)
        if auto_visualize:
            require_matplotlib()
        run = runtel.init(
            project=project,
            name=experiment_name,
            base_dir=None if base_dir is None else os.fspath(base_dir),
            exporters=None if backend is None else [backend],
        )
        autoviz = AutoVisualizer(run.dir, run.flush) if auto_visualize else None
        self._attach(StoredRun(run.dir), run, autoviz, every)

    @classmethod
    def open(
        cls,
        experiment_id: str,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        auto_visualize: bool = True,
        backend: str | None = None,
    ) -> ExperimentTracker:
        """A tracker over a stored experiment (id, 8+ character id prefix, or name).

        Reading, comparing and ``generate_visualizations`` always work. A finished experiment
        (``completed``, ``failed``) is read-only: any ``log_*`` raises ``RunFinishedError``. One whose
        process died or was stopped (``crashed``, ``killed``) is re-opened for resume: its first
        ``log_*`` call resumes the run (same id, steps continuing after the last stored one, see
        ``runtel.init(resume=...)``) with ``auto_visualize`` and ``backend`` as in the constructor, and
        ``finish()`` ends it. Until that first call the store is left as it is.
        """
        stored = Store(base_dir).run(experiment_id)
        tracker = cls.__new__(cls)
        tracker._attach(stored, None, every=_autoviz_every(None))
        if stored.status in RESUMABLE:
            tracker._resume_with = (auto_visualize, backend)
        return tracker

    def _attach(
        self,
        stored: StoredRun,
        run: Run | None,
        autoviz: AutoVisualizer | None = None,
        every: int = AUTOVIZ_EVERY,
    ) -> None:
        self._stored = stored
        self._run = run
        self._artifacts = run.artifacts if run is not None else ArtifactStore(stored.dir)
        self._autoviz = autoviz
        self._every = every
        self._started = False
        self._finished = run is None
        self._calls = 0
        self._resume_with: tuple[bool, str | None] | None = None

    # ------------------------------------------------------------------ identity and state
    @property
    def experiment_id(self) -> str:
        """The run id (32 hex characters, the OpenTelemetry trace id)."""
        return self._stored.id

    @property
    def experiment_name(self) -> str:
        return self._stored.name

    @property
    def experiment_dir(self) -> Path:
        """``<base_dir>/<name>_<id8>``: the run folder."""
        return self._stored.dir

    @property
    def run(self) -> Run | None:
        """The live :class:`runtel.Run` behind this tracker (None when opened and not resumed)."""
        return self._run

    @property
    def read_only(self) -> bool:
        """True when ``log_*`` raises: a finished experiment opened from the store."""
        return self._run is None and self._resume_with is None

    @property
    def status(self) -> str:
        """``created``, ``running``, ``completed``, ``failed``, ``killed`` or ``crashed`` (from the store)."""
        stored = self._stored.status
        if stored == "running" and self._run is not None and not self._started:
            return "created"
        return stored

    @property
    def metrics_history(self) -> dict[str, list[dict[str, Any]]]:
        """``{metric: get_metrics(metric)}`` for every metric, built from the store on each access."""
        self._catch_up()
        names = [name for name in self._stored.metrics() if not name.startswith(SYSTEM_PREFIX)]
        return {name: points for name in names if (points := _as_points(*self._stored.history(name)))}

    # ------------------------------------------------------------------ logging
    def log_hyperparameters(self, hyperparameters: Mapping[str, Any]) -> None:
        """Merged into ``hyperparameters.json``; nested dicts stay nested."""
        self._writable().log_params(hyperparameters)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (default: previous step + 1); see ``Run.log``."""
        self._writable().log(metrics, step)
        self._calls += 1
        if self._autoviz is not None and self._calls % self._every == 0:
            self._autoviz.request()

    def log_artifact(
        self, path: str | os.PathLike[str], name: str | None = None, version: bool = True
    ) -> ArtifactVersion:
        """Copy a file or folder into the run as a new version (``version=False`` replaces earlier ones)."""
        return self._writable().log_artifact(path, name, version)

    def log_model(
        self,
        model: Any,
        framework: str | None = None,
        version: bool = True,
        *,
        name: str | None = None,
    ) -> ArtifactVersion:
        """A model file or folder (named after it), or a torch module's ``state_dict`` (named ``model``).

        The version's ``metadata`` holds ``framework`` and, for a module, the ``format`` written
        (``safetensors`` when installed, else ``torch``).
        """
        label = name or (Path(model).name if isinstance(model, str | os.PathLike) else "model")
        return self._writable().log_model(model, label, framework, version=version)

    def log_figure(self, figure: Any, name: str, step: int | None = None) -> Path:
        """Save a matplotlib figure as ``plots/<name>_step<N>.png`` (N: ``step`` or the current step)."""
        return self._writable().log_figure(figure, name, step)

    # ------------------------------------------------------------------ reading back
    def get_metrics(self, metric_name: str) -> list[dict[str, Any]]:
        """``[{"step": int, "value": float, "timestamp": unix seconds}, ...]`` in logging order.

        For long series prefer :meth:`get_metric_arrays`.
        """
        return _as_points(*self.get_metric_arrays(metric_name))

    def get_metric_arrays(
        self, metric_name: str
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(steps, timestamps, values)`` as numpy arrays, straight from the store."""
        self._catch_up()
        return self._stored.history(metric_name)

    def get_best_metric(self, metric_name: str, mode: Literal["max", "min"] = "max") -> tuple[float, int]:
        """``(value, step)`` of the highest (``max``) or lowest (``min``) point; NaN points are skipped."""
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}")
        self._catch_up()
        return self._stored.best(metric_name, mode)

    def get_artifact_version(self, name: str, version: int = -1) -> ArtifactVersion:
        """Version ``version`` (1-based, -1 = latest), re-hashed first: ``ChecksumMismatchError``
        when the stored bytes changed."""
        return self._artifacts.get(name, version)

    def list_artifact_versions(self, name: str) -> list[ArtifactVersion]:
        """Every version of ``name``, oldest first."""
        return self._artifacts.versions(name)

    def generate_visualizations(self) -> dict[str, Path]:
        """Draw every plot now into ``plots/`` (``metric_<name>``, ``all_metrics_*``); plot name -> path."""
        require_matplotlib()
        self._catch_up()
        return MetricVisualizer.save_plots(plotted_series(self._stored), self.experiment_dir / "plots")

    # ------------------------------------------------------------------ lifecycle
    def finish(self, status: str = "completed") -> None:
        """End the run, then wait for the last automatic render. Safe to call twice."""
        if not self._finished:
            self._end(lambda run: run.finish(status))

    def __enter__(self) -> ExperimentTracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._finished:
            self._end(lambda run: run.__exit__(exc_type, exc, tb))

    def _end(self, finish_run: Callable[[Run], None]) -> None:
        self._finished = True
        assert self._run is not None
        finish_run(self._run)
        if self._autoviz is not None:
            self._autoviz.close()

    def _writable(self) -> Run:
        if self._run is None and self._resume_with is not None:
            self._resume()
        if self._run is None:
            raise RunFinishedError(
                f"experiment {self.experiment_name} ({self.experiment_id}) was opened read-only "
                f"(status {self.status}); create a new experiment to log more"
            )
        self._started = True
        return self._run

    def _resume(self) -> None:
        """Continue the interrupted run this tracker was opened on (the first ``log_*`` call)."""
        assert self._resume_with is not None
        auto_visualize, backend = self._resume_with
        if auto_visualize:
            require_matplotlib()
        run = runtel.init(
            project=self._stored.project,
            base_dir=os.fspath(self._stored.dir.parent),
            exporters=None if backend is None else [backend],
            resume=self._stored.id,
        )
        autoviz = AutoVisualizer(run.dir, run.flush) if auto_visualize else None
        self._attach(StoredRun(run.dir), run, autoviz, self._every)

    def _catch_up(self) -> None:
        """Make the store hold everything logged so far (it is otherwise up to a second behind)."""
        if not self._finished and self._run is not None:
            self._run.flush()


def _as_points(
    steps: npt.NDArray[np.int64], times: npt.NDArray[np.float64], values: npt.NDArray[np.float64]
) -> list[dict[str, Any]]:
    return [
        {"step": step, "value": value, "timestamp": when}
        for step, when, value in zip(steps.tolist(), times.tolist(), values.tolist(), strict=True)
    ]


def _autoviz_every(given: int | None) -> int:
    """The render period from the keyword, else ``RUNTEL_AUTOVIZ_EVERY``, else the default."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ConfigError(f"auto_visualize_every must be an integer >= 1, got {given!r}")
        return given
    raw = os.environ.get(_AUTOVIZ_ENV)
    if raw is None:
        return AUTOVIZ_EVERY
    try:
        every = int(raw)
    except ValueError:
        every = 0
    if every < 1:
        raise ConfigError(f"{_AUTOVIZ_ENV}={raw!r} is invalid: expected an integer >= 1")
    return every
