"""PyTorch Lightning: a logger that records into a runtel run, and a callback for epoch spans and step timing.

``Trainer(logger=RuntelLogger(project="p"), callbacks=[RuntelCallback()])``. By default only global
rank 0 creates and writes the run; other ranks get Lightning's no-op experiment.
``log_all_ranks=True`` makes every rank record into the same run (see docs/distributed.md).
Needs ``pip install runtel[lightning]``.
"""

from __future__ import annotations

import logging
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
from runtel.config import resolve_settings
from runtel.exporters.base import Exporter
from runtel.integrations import _rank_zero_alone
from runtel.integrations._hparams import storable_params
from runtel.run import Run
from runtel.step_timing import StepTimer

log = logging.getLogger("runtel")

#: Lightning's ``finalize`` statuses; "finished" comes from the SLURM requeue signal handler.
_STATUS = {"success": "completed", "failed": "failed", "finished": "killed"}


class RuntelLogger(Logger):  # type: ignore[misc,unused-ignore]
    """A Lightning logger whose experiment is a :class:`runtel.Run`, created on first use.

    ``version`` is the run id, ``log_dir`` the run's folder, ``save_dir`` the store's base folder.
    ``finalize`` finishes the run (success → completed, failed → failed, SLURM requeue → killed);
    a stage that logs after that (``trainer.test`` after ``trainer.fit``) starts a new run with the
    same settings. ``log_all_ranks`` (default: ``RUNTEL_LOG_ALL_RANKS``, else off) makes every rank
    record into the job's one run, under ``ranks/<n>/``. Other keyword arguments are those of
    :func:`runtel.init`. Epoch spans need :class:`RuntelCallback` too: a logger never sees epoch
    boundaries, and it warns once when epochs pass without one.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        base_dir: str | None = None,
        exporters: Sequence[str | Exporter] | None = None,
        *,
        log_all_ranks: bool | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._name = name
        self._all_ranks = resolve_settings({"log_all_ranks": log_all_ranks}).log_all_ranks
        self._init_kwargs = dict(
            project=project,
            name=name,
            config=config,
            base_dir=base_dir,
            exporters=exporters,
            log_all_ranks=self._all_ranks,
            **init_kwargs,
        )
        self._run: Run | None = None
        self._finalized = False
        #: Whether a change of the ``epoch`` metric still warns: no RuntelCallback seen, no warning yet.
        self._warn_on_epochs = True
        self._first_epoch: float | None = None

    @property
    def experiment(self) -> Run:
        """The run, started on first access; Lightning's no-op object on ranks that do not record."""
        return self._start() if self._all_ranks else self._start_on_rank_zero()

    @rank_zero_experiment  # type: ignore[untyped-decorator,unused-ignore]
    def _start_on_rank_zero(self) -> Run:
        return self._start()

    def _start(self) -> Run:
        if self._run is None:
            kwargs = self._init_kwargs if self._all_ranks else _rank_zero_alone(self._init_kwargs)
            self._run = runtel.init(**kwargs)
        return self._run

    @property
    def name(self) -> str | None:
        return str(self.experiment.name) if self._records_here() else self._name

    @property
    def version(self) -> str | None:
        return str(self.experiment.id) if self._records_here() else None

    @property
    def save_dir(self) -> str | None:
        return str(self.experiment.dir.parent) if self._records_here() else None

    @property
    def log_dir(self) -> str | None:
        return str(self.experiment.dir) if self._records_here() else None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._records_here():
            self._warn_if_epochs_pass_unseen(metrics.get("epoch"))
            self._open_run().log(metrics, step=step)

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record ``params`` (dict, ``AttributeDict``, ``Namespace``); values JSON cannot hold become text."""
        if self._records_here():
            self._open_run().log_params(storable_params(params))

    def finalize(self, status: str) -> None:
        if self._records_here() and self._run is not None and not self._finalized:
            self._finalized = True
            self._run.finish(_STATUS.get(status, "failed"))

    def _records_here(self) -> bool:
        return self._all_ranks or _rank_zero()

    def _open_run(self) -> Run:
        if self._finalized:
            self._run, self._finalized = None, False
        return self._start()

    def _warn_if_epochs_pass_unseen(self, epoch: float | None) -> None:
        """Lightning adds ``epoch`` to logged metrics; its change is the logger's only sign of epochs."""
        if epoch is None or not self._warn_on_epochs:
            return
        if self._first_epoch is None:
            self._first_epoch = epoch
        elif epoch != self._first_epoch:
            self._warn_on_epochs = False
            log.warning(
                "runtel: RuntelLogger records epochs only as the 'epoch' metric; for epoch spans and "
                "step timing add the callback: Trainer(logger=..., callbacks=[RuntelCallback()])"
            )


def _rank_zero() -> bool:
    """Whether this process is global rank 0, as the trainer's strategy set it."""
    rank: int = rank_zero_only.rank  # type: ignore[attr-defined,unused-ignore]
    return rank == 0


class RuntelCallback(Callback):  # type: ignore[misc,unused-ignore]
    """Each training epoch as an ``epoch`` span of the run, and each training batch timed by a
    :class:`~runtel.step_timing.StepTimer` (``batch_size`` gives samples/s; ``step_timing=False`` turns
    timing off). Validation is excluded from step times. Needs a :class:`RuntelLogger` in the trainer,
    and works on the ranks where that logger records.
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
        loggers[0]._warn_on_epochs = False
        if not loggers[0]._records_here():
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
