"""``ExperimentLogger``: step counting, interval means, epochs as spans, and a training summary.

It works with any :class:`~runtel.tracking.trackers.BaseTracker`; with a runtel-backed tracker
(``create_tracker``, ``MultiTracker``...) epochs are also spans of the run, and histograms,
system samples and checkpoints go to the same run.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from runtel._values import coerce_value
from runtel.errors import ConfigError, InvalidStepError
from runtel.run import Run
from runtel.step_timing import StepTimer
from runtel.system import SystemMetrics
from runtel.tracking.trackers import BaseTracker, MultiTracker

_LOGGER = logging.getLogger("runtel")

#: The run's checkpoint artifact; trackers that are not a runtel run get ``log_model(model, "checkpoint")``.
_RUN_CHECKPOINT = "checkpoint.safetensors"
_TRACKER_CHECKPOINT = "checkpoint"
#: The logger's own sampler only samples on demand: a period longer than any run keeps the reader's
#: periodic collection from moving the CPU baseline between two ``log_system_metrics`` calls.
_ON_DEMAND_ONLY = 365 * 24 * 3600.0


class ExperimentLogger:
    """Wraps a tracker for a training loop.

    ``log_training_step`` counts steps and, every ``log_interval`` steps, logs the **mean** of
    each metric over that interval (not one sampled value), at the interval's last step. With a
    torch ``model`` it also logs the global gradient and weight L2 norms. ``batch_size`` (samples
    per step) adds samples per second to the timing series and the summary.
    """

    def __init__(
        self, tracker: BaseTracker, log_interval: int = 10, *, batch_size: int | None = None
    ) -> None:
        if log_interval < 1:
            raise ConfigError(f"log_interval must be >= 1, got {log_interval}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 (samples per step) or None, got {batch_size}")
        self.tracker = tracker
        self.log_interval = log_interval
        self.batch_size = batch_size
        self.step = 0
        self.epochs_done = 0
        run = getattr(tracker, "run", None)
        self._run: Run | None = run if isinstance(run, Run) else None
        self._timer = StepTimer(self._run, batch_size) if self._run is not None else None
        # The run's own sampler when it has one (it records its samples itself); otherwise ours,
        # built now so that the first sample's CPU and byte counts cover the time since then.
        self._system: Run | SystemMetrics = (
            self._run
            if self._run is not None and self._run._system is not None
            else SystemMetrics(_ON_DEMAND_ONLY, _discard)
        )
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._started = time.perf_counter()
        self._finished: float | None = None
        self._step_seconds = 0.0
        self._timed_steps = 0
        self._last_step_end: float | None = None
        self._best: dict[str, float] = {}
        self._epoch_span: trace.Span | None = None
        self._last_epoch: int | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        self.tracker.log_params(params)

    def log_training_step(self, metrics: Mapping[str, Any], model: Any = None) -> None:
        """Count one step; every ``log_interval`` steps, log the interval's means.

        A step's time is the gap since the previous call in the same epoch, so the first step of
        each epoch is not timed: the gap before it holds validation and checkpointing.
        """
        now = time.perf_counter()
        if self._timer is not None:
            self._timer.tick()
        if self._last_step_end is not None:
            self._step_seconds += now - self._last_step_end
            self._timed_steps += 1
        self._last_step_end = now
        if self._run is not None and self._epoch_span is None:
            self._epoch_span = self._open_epoch_span(self._run)
        values = {name: coerce_value(name, value) for name, value in metrics.items()}
        if model is not None:
            values.update(_norms(model))
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1
        self.step += 1
        if self.step % self.log_interval == 0:
            self._flush_interval()

    def log_epoch_end(self, epoch: int, metrics: Mapping[str, Any], model: Any = None) -> None:
        """Log the epoch's metrics at the current step, close its span, optionally checkpoint ``model``.

        The span is named ``epoch <epoch>`` and carries ``epoch`` as given here.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise InvalidStepError(f"epoch must be a non-negative integer, got {epoch!r}")
        epoch = int(epoch)
        self._flush_interval()
        values = {name: coerce_value(name, value) for name, value in metrics.items()}
        if self._run is None:  # a runtel run records the epoch as its span (and exporters' epoch series)
            values["epoch"] = float(epoch)
        self.tracker.log_metrics(values, step=max(self.step - 1, 0))
        for name, value in values.items():
            self._remember_best(name, value)
        try:
            if model is not None:
                self._checkpoint(epoch, model)
        finally:
            if self._epoch_span is not None and self._run is not None:
                self._epoch_span.update_name(f"epoch {epoch}")
                self._epoch_span.set_attribute("epoch", epoch)
                self._run.end_span(self._epoch_span)
                self._epoch_span = None
            self._last_epoch = epoch
            self.epochs_done += 1
            self._last_step_end = None
            if self._timer is not None:  # evaluation and checkpointing are not a training step
                self._timer.start()

    def log_system_metrics(self) -> dict[str, float]:
        """Sample CPU, memory, disk, network and GPU now and log the values at the current step.

        CPU utilisation covers the time since the previous sample (the first: since the logger or
        its run was created); disk and network bytes are cumulative since that creation. After
        :meth:`finish` there is nothing to sample: ``{}``, as from a finished run.
        """
        if self._finished is not None:
            return {}
        if isinstance(self._system, Run):
            return self._system.sample_system()
        self._system.start()
        samples = self._system.sample_now()
        if samples:
            self.tracker.log_metrics(samples, step=max(self.step - 1, 0))
        return samples

    def get_training_summary(self) -> dict[str, Any]:
        """Steps, epochs, wall time, mean step time, throughput and the best value of each metric.

        Wall time stops at :meth:`finish`; ``samples_per_second`` is NaN without a ``batch_size``.
        """
        end = time.perf_counter() if self._finished is None else self._finished
        mean_step = self._step_seconds / self._timed_steps if self._timed_steps else math.nan
        steps_per_second = 1.0 / mean_step if mean_step > 0 else math.nan
        samples_per_second = steps_per_second * self.batch_size if self.batch_size else math.nan
        return {
            "total_steps": self.step,
            "epochs": self.epochs_done,
            "wall_time_seconds": end - self._started,
            "mean_step_seconds": mean_step,
            "steps_per_second": steps_per_second,
            "samples_per_second": samples_per_second,
            "best_metrics": dict(self._best),
        }

    def finish(self) -> None:
        """Flush the last interval, close the open epoch span and finish the tracker."""
        if self._finished is None:
            self._finished = time.perf_counter()
        self._flush_interval()
        if self._epoch_span is not None and self._run is not None:
            self._run.end_span(self._epoch_span)
            self._epoch_span = None
        if isinstance(self._system, SystemMetrics):
            self._system.shutdown()
        self.tracker.finish()

    def _open_epoch_span(self, run: Run) -> trace.Span:
        """Open the span of the epoch now starting; :meth:`log_epoch_end` gives it its final epoch."""
        guess = self.epochs_done if self._last_epoch is None else self._last_epoch + 1
        span = run.start_span(f"epoch {guess}", kind="epoch", epoch=guess)
        # The first step this epoch can hold, as on every span; the run's own counter may lag the
        # logger's, which logs once per interval.
        span.set_attribute("runtel.step_start", self.step)
        return span

    def _checkpoint(self, epoch: int, model: Any) -> None:
        """A new checkpoint version in the run (epoch as metadata) and in every other tracker."""
        if self._run is None:
            self.tracker.log_model(model, _TRACKER_CHECKPOINT)
            return
        self._run.log_model(model, _RUN_CHECKPOINT, metadata={"epoch": epoch})
        if isinstance(self.tracker, MultiTracker):
            for tracker in self.tracker.extra_trackers:
                try:
                    tracker.log_model(model, _TRACKER_CHECKPOINT)
                except Exception:
                    _LOGGER.exception(
                        "runtel: tracker %s.log_model failed; the others go on", type(tracker).__name__
                    )

    def _flush_interval(self) -> None:
        if not self._counts:
            return
        means = {name: self._sums[name] / self._counts[name] for name in self._sums}
        self.tracker.log_metrics(means, step=self.step - 1)
        for name, value in means.items():
            self._remember_best(name, value)
        self._sums.clear()
        self._counts.clear()

    def _remember_best(self, name: str, value: float) -> None:
        if math.isnan(value):
            return
        lower = any(word in name.lower() for word in ("loss", "error", "perplexity"))
        best = self._best.get(name)
        if best is None or (value < best if lower else value > best):
            self._best[name] = value


def _discard(_when: float, _values: dict[str, float]) -> None:
    """The logger logs what ``sample_now`` returns; the sampler's own delivery is not needed."""


def _norms(model: Any) -> dict[str, float]:
    """Global L2 norms of the weights and of the gradients present (torch modules)."""
    parameters = list(model.parameters())
    weight = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in parameters))
    grads = [p.grad for p in parameters if getattr(p, "grad", None) is not None]
    norms = {"weight_norm": weight}
    if grads:
        norms["grad_norm"] = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads))
    return norms
