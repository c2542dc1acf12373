"""The unified multi-backend tracker API (``BaseTracker`` ... ``create_multi_tracker``).

Every tracker is a thin facade over one :class:`runtel.Run` with the matching exporters: a
tracker is a run, not a second code path, so the local store keeps everything and a failing
backend never stops training. ``MultiTracker`` with several backend names is still ONE run
exported to each backend; user-written ``BaseTracker`` subclasses can sit beside them.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import runtel
from runtel.errors import ConfigError
from runtel.run import Run
from runtel.store.artifacts import ArtifactVersion

if TYPE_CHECKING:
    from runtel.tracking._dashboard import TensorBoardServer

logger = logging.getLogger("runtel")


class BaseTracker(abc.ABC):
    """The interface every tracker offers; subclass it to plug your own into ``MultiTracker``."""

    @abc.abstractmethod
    def log_params(self, params: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None: ...

    @abc.abstractmethod
    def log_artifact(self, path: str, artifact_path: str | None = None) -> object: ...

    @abc.abstractmethod
    def log_model(self, model: Any, name: str) -> object: ...

    @abc.abstractmethod
    def finish(self) -> None: ...

    def log_image(self, name: str, image: Any, step: int | None = None, caption: str | None = None) -> None:
        """An image at ``step``; a tracker of your own overrides this to take images."""
        raise NotImplementedError(f"{type(self).__name__} does not log images; override log_image")

    def log_table(
        self, name: str, data: Any, columns: Sequence[str] | None = None, step: int | None = None
    ) -> None:
        """A table at ``step``; a tracker of your own overrides this to take tables."""
        raise NotImplementedError(f"{type(self).__name__} does not log tables; override log_table")

    def __enter__(self) -> BaseTracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()


class RunTracker(BaseTracker):
    """A tracker backed by one runtel run (the local store, plus ``exporters``)."""

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        *,
        exporters: Sequence[str] = (),
        exporter_options: Mapping[str, Mapping[str, Any]] | None = None,
        base_dir: str | None = None,
        config: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.project_name = project_name
        self.experiment_name = experiment_name
        self.run: Run = runtel.init(
            project=project_name,
            name=experiment_name,
            config=config,
            base_dir=base_dir,
            exporters=list(exporters),
            exporter_options=exporter_options,
            **settings,
        )

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.log_params(params)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> ArtifactVersion:
        """Store ``path``; ``artifact_path`` groups it, as a folder would (``models/model.pt``)."""
        name = Path(path).name if artifact_path is None else f"{artifact_path.strip('/')}/{Path(path).name}"
        return self.run.log_artifact(path, name)

    def log_model(self, model: Any, name: str) -> ArtifactVersion:
        """A path, or a torch module's ``state_dict`` (safetensors when installed), as a new version."""
        return self.run.log_model(model, name)

    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> None:
        self.run.log_histogram(name, values, step=step, bins=bins)

    def log_image(self, name: str, image: Any, step: int | None = None, caption: str | None = None) -> None:
        """Through the run: stored exactly, and sent to each backend as its native image."""
        self.run.log_image(name, image, step=step, caption=caption)

    def log_table(
        self, name: str, data: Any, columns: Sequence[str] | None = None, step: int | None = None
    ) -> None:
        """Through the run: stored with its column types, and sent to each backend as its native table."""
        self.run.log_table(name, data, columns=columns, step=step)

    def finish(self) -> None:
        self.run.finish()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.run.__exit__(exc_type, exc, tb)


class LocalTracker(RunTracker):
    """The local store only, no backend: what ``create_tracker(project, backend="local")`` returns.

    A run like any other (``tracker.run``), readable with ``runtel.Store``, ``runtel show`` and the UI,
    and replayable to any backend later with ``runtel export``.
    """

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        *,
        base_dir: str | None = None,
        config: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(project_name, experiment_name, base_dir=base_dir, config=config, **settings)


class WandbTracker(RunTracker):
    """Weights & Biases; ``api_key`` goes to wandb in memory only, never to disk or logs."""

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        api_key: str | None = None,
        *,
        entity: str | None = None,
        mode: str | None = None,
        dir: str | None = None,
        base_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = {"project": project_name, "entity": entity, "mode": mode, "dir": dir, "api_key": api_key}
        super().__init__(
            project_name,
            experiment_name,
            exporters=["wandb"],
            exporter_options={"wandb": {k: v for k, v in options.items() if v is not None}},
            base_dir=base_dir,
            **kwargs,
        )


class MLflowTracker(RunTracker):
    """MLflow, local (``sqlite:///mlflow.db``, ``./mlruns``) or a tracking server."""

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        tracking_uri: str | None = None,
        *,
        base_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = {"tracking_uri": tracking_uri, "experiment_name": project_name}
        super().__init__(
            project_name,
            experiment_name,
            exporters=["mlflow"],
            exporter_options={"mlflow": {k: v for k, v in options.items() if v is not None}},
            base_dir=base_dir,
            **kwargs,
        )


class TensorBoardTracker(RunTracker):
    """TensorBoard event files under ``log_dir``; ``launch_dashboard`` starts the real server."""

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        log_dir: str = "./runs",
        *,
        base_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.log_dir = log_dir
        self._dashboard: TensorBoardServer | None = None
        self._dashboard_before_finish = False
        self._finished = False
        super().__init__(
            project_name,
            experiment_name,
            exporters=["tensorboard"],
            exporter_options={"tensorboard": {"log_dir": log_dir}},
            base_dir=base_dir,
            **kwargs,
        )

    def launch_dashboard(self, port: int = 6006, timeout: float = 60.0, *, keep: bool = False) -> str:
        """Start ``tensorboard --logdir <log_dir>`` on 127.0.0.1 and return its URL once it serves.

        A port already in use raises :class:`PortInUseError`; ``port=0`` picks a free port (the
        URL and a warning say which). The server is stopped by :meth:`stop_dashboard`, by
        :meth:`finish` when launched before it, and at exit; ``keep=True`` leaves it running after
        the script ends (stop it yourself, its pid is ``dashboard_pid``).
        """
        from runtel.tracking._dashboard import TensorBoardServer

        self.stop_dashboard()
        self._dashboard = TensorBoardServer(self.log_dir, port, keep=keep, timeout=timeout)
        self._dashboard_before_finish = not self._finished
        return self._dashboard.url

    @property
    def dashboard_pid(self) -> int | None:
        """The process id of the running dashboard, if one is running."""
        return self._dashboard.pid if self._dashboard is not None and self._dashboard.running() else None

    def stop_dashboard(self) -> None:
        if self._dashboard is not None:
            self._dashboard.stop()
        self._dashboard = None

    def finish(self) -> None:
        """Finish the run; a dashboard launched before (and not kept) stops with it."""
        super().finish()
        self._finished = True
        if self._dashboard is not None and self._dashboard_before_finish and not self._dashboard.keep:
            self.stop_dashboard()


class NeptuneTracker(RunTracker):
    """Neptune 1.x: offline mode by default (its SaaS closed in March 2026), or a self-hosted server."""

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        api_token: str | None = None,
        *,
        mode: str = "offline",
        data_directory: str | None = None,
        base_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = {"api_token": api_token, "mode": mode, "data_directory": data_directory}
        super().__init__(
            project_name,
            experiment_name,
            exporters=["neptune"],
            exporter_options={"neptune": {k: v for k, v in options.items() if v is not None}},
            base_dir=base_dir,
            **kwargs,
        )


class MultiTracker(BaseTracker):
    """Several backends at once: backend names share ONE run; ``BaseTracker`` objects are called too.

    A user tracker that raises is logged and skipped for that call, so it cannot stop training.
    """

    def __init__(
        self,
        project_name: str,
        experiment_name: str | None = None,
        trackers: Sequence[str | BaseTracker] = ("tensorboard",),
        *,
        exporter_options: Mapping[str, Mapping[str, Any]] | None = None,
        base_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        names = [t for t in trackers if isinstance(t, str)]
        self.extra_trackers = [t for t in trackers if isinstance(t, BaseTracker)]
        unknown = [t for t in trackers if not isinstance(t, str | BaseTracker)]
        if unknown:
            raise ConfigError(f"trackers must be backend names or BaseTracker objects, got {unknown!r}")
        self.project_name = project_name
        self.experiment_name = experiment_name
        self.primary = RunTracker(
            project_name,
            experiment_name,
            exporters=[_backend_exporter(name) for name in names],
            exporter_options=exporter_options,
            base_dir=base_dir,
            **kwargs,
        )
        self.run = self.primary.run

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", params)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._each("log_metrics", metrics, step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """``artifact_path`` is passed on only when given: a user tracker may take ``path`` alone."""
        self._each("log_artifact", path, *(() if artifact_path is None else (artifact_path,)))

    def log_model(self, model: Any, name: str) -> None:
        self._each("log_model", model, name)

    def log_histogram(self, name: str, values: Any, step: int | None = None) -> None:
        self.primary.log_histogram(name, values, step)

    def log_image(self, name: str, image: Any, step: int | None = None, caption: str | None = None) -> None:
        self._each("log_image", name, image, step, caption)

    def log_table(
        self, name: str, data: Any, columns: Sequence[str] | None = None, step: int | None = None
    ) -> None:
        self._each("log_table", name, data, columns, step)

    def finish(self) -> None:
        self._each("finish")

    def _each(self, method: str, *args: Any) -> None:
        getattr(self.primary, method)(*args)
        for tracker in self.extra_trackers:
            try:
                getattr(tracker, method)(*args)
            except Exception:
                logger.exception(
                    "runtel: tracker %s.%s failed; the others go on", type(tracker).__name__, method
                )


_TRACKERS: dict[str, type[RunTracker]] = {
    "wandb": WandbTracker,
    "mlflow": MLflowTracker,
    "tensorboard": TensorBoardTracker,
    "neptune": NeptuneTracker,
}


def _backend_exporter(name: str) -> str:
    backend = name.lower()
    if backend in ("local", "runtel"):
        return "local"
    if backend not in _TRACKERS:
        raise ConfigError(f"unknown backend {name!r}; use one of {sorted([*_TRACKERS, 'local'])}")
    return backend


def create_tracker(
    project_name: str, backend: str = "local", experiment_name: str | None = None, **kwargs: Any
) -> RunTracker:
    """One tracker for ``backend`` (wandb, mlflow, tensorboard, neptune, or local for the store only)."""
    if _backend_exporter(backend) == "local":
        return LocalTracker(project_name, experiment_name, **kwargs)
    return _TRACKERS[backend.lower()](project_name, experiment_name, **kwargs)


def create_multi_tracker(
    project_name: str,
    trackers: Sequence[str | BaseTracker],
    wandb_api_key: str | None = None,
    tensorboard_dir: str | None = None,
    mlflow_tracking_uri: str | None = None,
    experiment_name: str | None = None,
    **kwargs: Any,
) -> MultiTracker:
    """A ``MultiTracker`` with the common per-backend settings as keywords."""
    options: dict[str, dict[str, Any]] = {}
    if wandb_api_key is not None:
        options["wandb"] = {"api_key": wandb_api_key}
    if tensorboard_dir is not None:
        options["tensorboard"] = {"log_dir": tensorboard_dir}
    if mlflow_tracking_uri is not None:
        options["mlflow"] = {"tracking_uri": mlflow_tracking_uri}
    return MultiTracker(project_name, experiment_name, trackers, exporter_options=options, **kwargs)
