"""``ExperimentLogger``: step counting, interval means, epochs as spans, and a training summary.

It works with any :class:`~runtel.tracking.trackers.BaseTracker`; with a runtel-backed tracker
(``create_tracker``, ``MultiTracker``...) epochs are also spans of the run, and histograms,
system samples and checkpoints go to the same run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from runtel._values import coerce_value
from runtel.run import Run
from runtel.step_timing import StepTimer
from runtel.system import SystemMetrics
from runtel.tracking.trackers import BaseTracker


class ExperimentLogger:
    """Wraps a tracker for a training loop.

    ``log_training_step`` counts steps and, every ``log_interval`` steps, logs the **mean** of
    each metric over that interval (not one sampled value), at the interval's last step. With a
    torch ``model`` it also logs the global gradient and weight L2 norms.
    """

    def __init__(self, tracker: BaseTracker, log_interval: int = 10) -> None:
        if log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {log_interval}")
        self.tracker = tracker
        self.log_interval = log_interval
        self.step = 0
        self.epochs_done = 0
        self._run: Run | None = getattr(tracker, "run", None)
        self._timer = StepTimer(self._run) if self._run is not None else None
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._started = time.perf_counter()
        self._step_seconds = 0.0
        self._last_step_end: float | None = None
        self._best: dict[str, float] = {}
        self._epoch_span: trace.Span | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        self.tracker.log_params(params)

    def log_training_step(self, metrics: Mapping[str, Any], model: Any = None) -> None:
        """Count one step; every ``log_interval`` steps, log the interval's means."""
        if self._timer is not None:
            self._timer.tick()
        now = time.perf_counter()
        if self._last_step_end is not None:
            self._step_seconds += now - self._last_step_end
        self._last_step_end = now
        if self._run is not None and self._epoch_span is None:
            self._epoch_span = self._run.start_span(
                f"epoch {self.epochs_done}", kind="epoch", epoch=self.epochs_done
            )
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
        """Log the epoch's metrics at the current step, close its span, optionally checkpoint ``model``."""
        self._flush_interval()
        values = {name: coerce_value(name, value) for name, value in metrics.items()}
        if self._run is None:  # a runtel run records the epoch as its span (and exporters' epoch series)
            values["epoch"] = float(epoch)
        self.tracker.log_metrics(values, step=max(self.step - 1, 0))
        for name, value in values.items():
            self._remember_best(name, value)
        if model is not None and self._run is not None and hasattr(model, "state_dict"):
            self._run.log_model(model, "checkpoint.safetensors", metadata={"epoch": epoch})
        if self._epoch_span is not None and self._run is not None:
            self._run.end_span(self._epoch_span)
            self._epoch_span = None
        self.epochs_done += 1
        if self._timer is not None:  # evaluation and checkpointing are not a training step
            self._timer.start()

    def log_system_metrics(self) -> dict[str, float]:
        """Sample CPU, memory, disk, network and GPU now and log the values at the current step."""
        if self._run is not None and self._run._system is not None:
            return self._run.sample_system()
        samples: dict[str, float] = {}
        sampler = SystemMetrics(3600.0, lambda _when, values: samples.update(values))
        sampler.start()
        try:
            sampler.sample_now()
        finally:
            sampler.shutdown()
        if samples:
            self.tracker.log_metrics(samples, step=max(self.step - 1, 0))
        return samples

    def get_training_summary(self) -> dict[str, Any]:
        """Steps, epochs, wall time, mean step time, throughput and the best value of each metric."""
        wall = time.perf_counter() - self._started
        timed_steps = max(self.step - 1, 0)
        mean_step = self._step_seconds / timed_steps if timed_steps else math.nan
        return {
            "total_steps": self.step,
            "epochs": self.epochs_done,
            "wall_time_seconds": wall,
            "mean_step_seconds": mean_step,
            "steps_per_second": 1.0 / mean_step if timed_steps and mean_step > 0 else math.nan,
            "best_metrics": dict(self._best),
        }

    def finish(self) -> None:
        self._flush_interval()
        if self._epoch_span is not None and self._run is not None:
            self._run.end_span(self._epoch_span)
            self._epoch_span = None
        self.tracker.finish()

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


def _norms(model: Any) -> dict[str, float]:
    """Global L2 norms of the weights and of the gradients present (torch modules)."""
    parameters = list(model.parameters())
    weight = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in parameters))
    grads = [p.grad for p in parameters if getattr(p, "grad", None) is not None]
    norms = {"weight_norm": weight}
    if grads:
        norms["grad_norm"] = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads))
    return norms
