"""Step duration and throughput as OpenTelemetry instruments of a run.

A :class:`StepTimer` records each step's duration (seconds) into a histogram and derives
throughput (steps/s, and samples/s when a batch size is known) in observable gauges, all on
``run.meter``: the run's background flush collects them as series of the run at the current
step, and any OTel reader attached to the run (OTLP, Prometheus) sees them too. The hot path is
one ``time.perf_counter()``, one ``Histogram.record`` and one tuple assignment per step.
"""

from __future__ import annotations

import time
from types import TracebackType

from opentelemetry.metrics import CallbackOptions, Observation

from runtel.run import Run

#: Histogram buckets in seconds, for OTel readers that export buckets (runtel's own series keep
#: count/sum/min/max of each flush window and need none).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StepTimer:
    """Times the training steps of ``run``.

    Series: ``<prefix>/step_seconds/count``, ``/sum``, ``/min``, ``/max`` (each flush window),
    ``<prefix>/steps_per_second`` and, when samples are known, ``<prefix>/samples_per_second``.
    Mark steps either with :meth:`tick` once per iteration (a tick ends the step begun at the
    previous tick, or at creation or :meth:`start` for the first), or with ``with timer.step():``
    around the step's body (only the body is timed). Throughput is steps (samples) per second of
    training time since the meter's previous collection; pauses closed by :meth:`start` are not
    training time, and a window in which no step ended reports nothing rather than 0.
    """

    def __init__(self, run: Run, batch_size: int | None = None, prefix: str = "timing") -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.batch_size = batch_size
        self._histogram = run.meter.create_histogram(
            f"{prefix}/step_seconds",
            unit="s",
            description="Duration of one training step",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        now = time.perf_counter()
        self._begin = now  # start of the step in progress
        self._origin = now  # perf_counter at the last (re)start of the clock
        self._trained = 0.0  # training seconds before that (re)start
        # (steps, samples, training seconds at the last step end), replaced as one object so the
        # collecting thread never pairs a count with the time of another step.
        self._mark: tuple[int, int, float] = (0, 0, 0.0)
        self._scope = _StepScope(self)
        for field, name, what in ((0, "steps_per_second", "steps"), (1, "samples_per_second", "samples")):
            run.meter.create_observable_gauge(
                f"{prefix}/{name}",
                callbacks=[_Rate(self, field)],
                unit="1/s",
                description=f"Training {what} per second since the previous collection",
            )

    def start(self) -> None:
        """(Re)start the clock, e.g. after validation: the pause is neither a step nor training time."""
        now = time.perf_counter()
        self._trained = self._mark[2]
        self._origin = self._begin = now

    def tick(self, samples: int | None = None) -> None:
        """End the step in progress (``samples`` overrides ``batch_size`` for it); the next begins now."""
        now = time.perf_counter()
        self._end_step(now, samples)
        self._begin = now

    def step(self, samples: int | None = None) -> _StepScope:
        """``with timer.step():`` times the block as one step (a block that raises is not counted)."""
        self._scope.samples = samples
        return self._scope

    def _end_step(self, now: float, samples: int | None) -> None:
        self._histogram.record(now - self._begin)
        steps, done, _ = self._mark
        counted = samples if samples is not None else self.batch_size or 0
        self._mark = (steps + 1, done + counted, self._trained + now - self._origin)


class _Rate:
    """Observable-gauge callback: the count's increase over training time since its last call."""

    __slots__ = ("_count", "_field", "_seconds", "_timer")

    def __init__(self, timer: StepTimer, field: int) -> None:
        self._timer = timer
        self._field = field
        self._count: float = 0
        self._seconds = 0.0

    def __call__(self, _options: CallbackOptions) -> list[Observation]:
        mark = self._timer._mark
        count, seconds = mark[self._field], mark[2]
        added, elapsed = count - self._count, seconds - self._seconds
        self._count, self._seconds = count, seconds
        if added <= 0 or elapsed <= 0:
            return []
        return [Observation(added / elapsed)]


class _StepScope:
    """The reusable context manager behind :meth:`StepTimer.step` (nothing allocated per step)."""

    __slots__ = ("_timer", "samples")

    def __init__(self, timer: StepTimer) -> None:
        self._timer = timer
        self.samples: int | None = None

    def __enter__(self) -> None:
        self._timer._begin = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._timer._end_step(time.perf_counter(), self.samples)
