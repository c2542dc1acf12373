"""Hugging Face ``transformers``: a ``TrainerCallback`` that records a ``Trainer`` run into runtel.

``Trainer(..., callbacks=[RuntelCallback(project="p")])``, with ``report_to=[]`` or beside other
integrations. By default only the world process zero creates and writes the run;
``log_all_ranks=True`` makes every process record into the same run (see docs/distributed.md).
Needs ``pip install runtel[transformers]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace

from runtel.errors import MissingExtraError

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:
    raise MissingExtraError(
        f"runtel.integrations.huggingface needs the transformers package ({exc}): "
        "pip install runtel[transformers]"
    ) from exc

import runtel
from runtel.config import resolve_settings
from runtel.exporters.base import Exporter
from runtel.integrations import _rank_zero_alone
from runtel.integrations._hparams import storable_params
from runtel.run import Run
from runtel.step_timing import StepTimer

logger = logging.getLogger("runtel")


class RuntelCallback(TrainerCallback):  # type: ignore[misc,unused-ignore]
    """Creates a run at ``on_train_begin`` and finishes it (completed) at ``on_train_end``.

    Parameters: ``args.to_dict()`` at the top level and the model's config under ``model_config``,
    plus ``config``. Every numeric value of each ``on_log`` is logged at ``state.global_step``
    (strings are skipped); each epoch is an ``epoch`` span; each optimizer step is timed by a
    :class:`~runtel.step_timing.StepTimer` counting ``train_batch_size * gradient_accumulation_steps
    * world_size`` samples (``step_timing=False`` turns it off). ``log_checkpoints=True`` stores each
    saved ``checkpoint-<step>`` folder as a version of the ``checkpoint`` model artifact.
    ``finish_at_train_end=False`` keeps the run open for ``trainer.evaluate()`` afterwards (then call
    ``callback.run.finish()``); otherwise later logs are refused with a warning. A training run that
    raises never reaches ``on_train_end``: runtel's exit hook marks it failed.
    ``log_all_ranks`` (default: ``RUNTEL_LOG_ALL_RANKS``, else off) makes every process record into
    the job's one run, under ``ranks/<n>/``. Other keyword arguments go to :func:`runtel.init`.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        base_dir: str | None = None,
        exporters: Sequence[str | Exporter] | None = None,
        *,
        step_timing: bool = True,
        log_checkpoints: bool = False,
        finish_at_train_end: bool = True,
        log_all_ranks: bool | None = None,
        **init_kwargs: Any,
    ) -> None:
        self._all_ranks = resolve_settings({"log_all_ranks": log_all_ranks}).log_all_ranks
        self._init_kwargs = dict(
            project=project,
            name=name,
            base_dir=base_dir,
            exporters=exporters,
            log_all_ranks=self._all_ranks,
            **init_kwargs,
        )
        self._config = dict(config or {})
        self._step_timing = step_timing
        self._log_checkpoints = log_checkpoints
        self._finish_at_train_end = finish_at_train_end
        self._finished = False
        self.run: Run | None = None
        self._timer: StepTimer | None = None
        self._epoch_span: trace.Span | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not (state.is_world_process_zero or self._all_ranks):
            return
        params = storable_params(args.to_dict())  # type: ignore[no-untyped-call,unused-ignore]
        model_config = getattr(kwargs.get("model"), "config", None)
        if model_config is not None:
            params["model_config"] = storable_params(model_config.to_dict())
        params.update(storable_params(self._config))
        options = self._init_kwargs if self._all_ranks else _rank_zero_alone(self._init_kwargs)
        self.run = runtel.init(config=params, **options)
        self._finished = False
        if self._step_timing:
            samples = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            self._timer = StepTimer(self.run, batch_size=samples)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is None:
            return
        epoch = round(state.epoch or 0.0)
        self._epoch_span = self.run.start_span(f"epoch {epoch}", kind="epoch", epoch=epoch)
        if self._timer is not None:
            self._timer.start()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._timer is not None:
            self._timer.tick()

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._timer is not None:
            self._timer.start()  # evaluation is a pause, not part of the next step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.run is None or not logs:
            return
        if self._finished:
            logger.warning(
                "runtel: run %s finished at on_train_end; logs after it (%s) are not recorded. "
                "Pass RuntelCallback(finish_at_train_end=False) and call callback.run.finish() yourself",
                self.run.id,
                ", ".join(logs),
            )
            return
        numbers = {key: value for key, value in logs.items() if isinstance(value, int | float)}
        if numbers:
            self.run.log(numbers, step=state.global_step)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is None or not self._log_checkpoints or args.output_dir is None:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.run.log_model(folder, "checkpoint", framework="transformers")

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None and self._epoch_span is not None:
            self.run.end_span(self._epoch_span)
            self._epoch_span = None

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._timer = None
        if self.run is not None and self._finish_at_train_end:
            self.run.finish("completed")
            self._finished = True
