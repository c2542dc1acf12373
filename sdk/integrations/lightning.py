"""PyTorch Lightning: a logger that records into a runtel run, and a callback for epoch spans and step timing.

``Trainer(logger=RuntelLogger(project="p"), callbacks=[RuntelCallback()])``. Only global rank 0
creates and writes the run (Lightning's ``rank_zero_only`` / ``rank_zero_experiment``); other ranks
get Lightning's no-op experiment. Needs ``pip install runtel[lightning]``.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace

from runtel.errors import ConfigError, MissingExtraError

try:
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
except ImportError as exc:
    raise MissingExtraError(
        f"runtel.integrations.lightning needs the lightning package ({exc}): pip install runtel[lightning]"
    ) from exc

import runtel
from runtel.exporters.base import Exporter
from runtel.integrations._hparams import storable_params
from runtel.run import Run
from runtel.step_timing import StepTimer

#: Lightning's ``finalize`` statuses; "finished" comes from the SLURM requeue signal handler.
_STATUS = {"success": "completed", "failed": "failed", "finished": "killed"}


class RuntelLogger(Logger):  # type: ignore[misc,unused-ignore]
    """A Lightning logger whose experiment is a :class:`runtel.Run`, created on first use.

    ``version`` is the run id, ``log_dir`` the run's folder, ``save_dir`` the store's base folder.
    ``finalize`` finishes the run (success → completed, failed → failed, SLURM requeue → killed);
    a stage that logs after that (``trainer.test`` after ``trainer.fit``) starts a new run with the
    same settings. Keyword arguments are those of :func:`runtel.init`.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        base_dir: str | None = None,
        exporters: Sequence[str | Exporter] | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._name = name
        self._init_kwargs = dict(
            project=project, name=name, config=config, base_dir=base_dir, exporters=exporters, **init_kwargs
        )
        self._run: Run | None = None
        self._finalized = False

    @property
    @rank_zero_experiment  # type: ignore[untyped-decorator,unused-ignore]
    def experiment(self) -> Run:
        """The run (rank 0; Lightning's no-op object elsewhere), started on first access."""
        if self._run is None:
            self._run = runtel.init(**self._init_kwargs)
        return self._run

    @property
    def name(self) -> str | None:
        return str(self.experiment.name) if _rank_zero() else self._name

    @property
    def version(self) -> str | None:
        return str(self.experiment.id) if _rank_zero() else None

    @property
    def save_dir(self) -> str | None:
        return str(self.experiment.dir.parent) if _rank_zero() else None

    @property
    def log_dir(self) -> str | None:
        return str(self.experiment.dir) if _rank_zero() else None

    @rank_zero_only  # type: ignore[untyped-decorator,unused-ignore]
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._open_run().log(metrics, step=step)

    @rank_zero_only  # type: ignore[untyped-decorator,unused-ignore]
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record ``params`` (dict, ``AttributeDict``, ``Namespace``); values JSON cannot hold become text."""
        self._open_run().log_params(storable_params(params))

    @rank_zero_only  # type: ignore[untyped-decorator,unused-ignore]
    def finalize(self, status: str) -> None:
        if self._run is not None and not self._finalized:
            self._finalized = True
            self._run.finish(_STATUS.get(status, "failed"))

    def _open_run(self) -> Run:
        if self._finalized:
            self._run, self._finalized = None, False
        run: Run = self.experiment
        return run


def _rank_zero() -> bool:
    """Whether this process is global rank 0, as the trainer's strategy set it."""
    rank: int = rank_zero_only.rank  # type: ignore[attr-defined,unused-ignore]
    return rank == 0


class RuntelCallback(Callback):  # type: ignore[misc,unused-ignore]
    """Each training epoch as an ``epoch`` span of the run, and each training batch timed by a
    :class:`~runtel.step_timing.StepTimer` (``batch_size`` gives samples/s; ``step_timing=False`` turns
    timing off). Validation is excluded from step times. Needs a :class:`RuntelLogger` in the trainer.
    """

    def __init__(self, step_timing: bool = True, batch_size: int | None = None) -> None:
        super().__init__()
        self._step_timing = step_timing
        self._batch_size = batch_size
        self._run: Run | None = None
        self._timer: StepTimer | None = None
        self._epoch_span: trace.Span | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, RuntelLogger)]
        if not loggers:
            raise ConfigError("RuntelCallback needs Trainer(logger=RuntelLogger(...)); the trainer has none")
        if not trainer.is_global_zero:
            return
        self._run = loggers[0]._open_run()
        self._timer = StepTimer(self._run, self._batch_size) if self._step_timing else None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._run is None:
            return
        epoch = trainer.current_epoch
        self._epoch_span = self._run.start_span(f"epoch {epoch}", kind="epoch", epoch=epoch)
        if self._timer is not None:
            self._timer.start()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._timer is not None:
            self._timer.tick()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._timer is not None:
            self._timer.start()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._run is not None and self._epoch_span is not None:
            self._run.end_span(self._epoch_span)
            self._epoch_span = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._run, self._timer = None, None
