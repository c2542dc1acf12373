"""The Run: what training code talks to.

``log`` is the hot path: it validates, stamps (step, time, span) and appends one tuple to
an in-memory queue (a ``deque``, whose ``append`` needs no lock); no I/O, no backend call.
A background flush thread turns the buffer into records about once a second and hands
them to the dispatcher, which feeds the local store and every other exporter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import tempfile
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import chain, islice, repeat
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Status, StatusCode

from runtel import _health, _memory, _otel, _redact, _switch
from runtel._dispatch import Dispatcher
from runtel._histogram import make_histogram
from runtel._hotpath import ACCELERATED, HotPath, PointsBlock
from runtel._identity import locate_run
from runtel._live_edits import LiveEdits
from runtel._media_log import MediaLogging, holds_media
from runtel._models import save_torch_module
from runtel._params import check_params
from runtel._values import MAX_EXACT_INT, MAX_STEP, check_name, check_span_text, check_step, coerce_value
from runtel.config import Settings
from runtel.errors import (
    ArtifactError,
    ConfigError,
    InvalidMetricError,
    InvalidNameError,
    InvalidStepError,
    RunFinishedError,
    RunForkedError,
)
from runtel.exporters.base import Exporter, TelemetryHooks
from runtel.records import (
    SERIES_DTYPE,
    FigureLogged,
    Heartbeat,
    MetricPoints,
    ParamsLogged,
    Record,
    RunStarted,
    flatten_params,
)
from runtel.store._media_writer import MediaWriter, PendingMedia

if TYPE_CHECKING:  # imported when first used: keeps `import runtel` fast
    from runtel.store.artifacts import ArtifactVersion
    from runtel.store.edits import Tags
    from runtel.sweep import SweepInfo, SweepRef
    from runtel.system import SystemMetrics

logger = logging.getLogger("runtel")

#: One ``log`` call as queued: (step, time, span id, series ids, values).
_Call = tuple[int, float, int, tuple[int, ...], tuple[float, ...]]
#: Points a batch aims at: the flush wakes early once about this many are queued, so each write
#: stays short and memory is bounded by this window rather than by the run.
_BATCH_POINTS = 65_536
#: Bounds of the queued calls that wake the flush early (the count follows the calls' width). The C
#: hot path keeps ~36 bytes a point, so one-metric calls may fill a whole batch; the pure-Python
#: twin queues a tuple of ~300 bytes a call, so it wakes the flush 4x sooner.
_WAKE_MIN_CALLS, _WAKE_MAX_CALLS = 1_024, 65_536 if ACCELERATED else 16_384
_NEVER = 2**62  # a wake threshold no queue reaches (tests hold the flush with it)
#: Batches the store writer may have queued before ``log`` waits for it, and the longest wait.
_STORE_LAG_BATCHES, _STORE_WAIT_S = 2, 2.0
#: Calls queued after a wake before ``log`` waits for the flush to take the queue (at most
#: ``_STORE_WAIT_S``): a loop faster than the flush then holds a few batches (~300 bytes a call),
#: not a queue growing with the run (a 10,000,000-point run peaked 95 MiB above a short one).
_BEHIND_CALLS = 2 * _WAKE_MAX_CALLS
#: Most queued tuples converted into one block of columns; a larger backlog is split into several.
_MAX_BATCH_CALLS = _WAKE_MAX_CALLS
#: Distinct sets of metric names whose series ids are cached for ``log``.
_MAX_LAYOUTS = 4_096
_STEP, _TIME, _SPAN, _IDS, _VALUES = (itemgetter(i) for i in range(5))  # fields of a _Call, at C speed


class Run(HotPath, MediaLogging):
    """One training run: a trace, its spans, its metric series, parameters and artifacts.

    Create it with :func:`runtel.init`. Use it as a context manager, or call
    :meth:`finish`; an ``atexit`` hook finishes a run a script forgot.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config: Mapping[str, Any] | None,
        exporters: Sequence[Exporter],
        span_processors: Iterable[SpanProcessor] = (),
        metric_readers: Sequence[MetricReader] = (),
        environ: Mapping[str, str] | None = None,
        resume: str | None = None,
        sweep: SweepRef | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        from runtel._console import open_descriptors

        console_fds = open_descriptors()  # before any file of the run can take a closed 1 or 2
        clean_config = check_params(config or {})
        self._settings = settings
        self.project = settings.project
        self._lock = threading.Lock()  # guards the series name table only
        self._queue = deque()  # of _Call | Record | PointsBlock
        self._series_ids: dict[str, int] = {}
        self._series_names: list[str] = []
        self._last_step = -1
        self._layouts = {}
        self._wake_at = _BATCH_POINTS // 16  # until the first flush has seen how wide calls are
        self._finished = False
        self._user_totals: dict[str, float] = {}
        self._mirrors: dict[str, Any] = {}
        self._owner_pid = os.getpid()  # a forked child is not the owner (see _detach_in_child)
        self._child_warned = False
        self._figure_names: dict[str, str] = {}  # collision key -> name (see log_figure)
        self._media_names: dict[str, str] = {}  # keys logged as media (never also a metric)

        from runtel import __version__

        where = locate_run(settings, env, resume)
        self.id, self.name, self.job, self.resumed = where.run_id, where.name, where.job, where.resumed
        #: Records log() calls of this process (always on rank 0; elsewhere only when asked).
        self._silent = not (where.job.primary or settings.log_all_ranks)
        resource = _otel.make_resource(
            {
                "service.name": self.project,
                "host.name": platform.node(),
                "process.pid": os.getpid(),
                "runtel.run.id": self.id,
                "runtel.run.name": self.name,
                "runtel.version": __version__,
                "runtel.rank": where.job.rank,
                "runtel.world_size": where.job.world_size,
                **({"vcs.ref.head.revision": revision} if (revision := _git_revision()) else {}),
                **(sweep.resource_attributes(where.run_id) if sweep is not None else {}),
            }
        )
        #: The sweep this run is (or is a trial of), see :mod:`runtel.sweep`; None outside sweeps.
        self.sweep: SweepInfo | None = _sweep_info(sweep, where.run_id)
        hooks = [e for e in exporters if isinstance(e, TelemetryHooks)]
        processors = [*span_processors, *(p for hook in hooks for p in hook.span_processors())]
        readers = [*metric_readers, *(r for hook in hooks for r in hook.metric_readers())]
        trace_id = int(self.id, 16)
        self._tracer_provider = _otel.make_tracer_provider(
            resource, [_otel.RecordingSpanProcessor(self._emit), *processors], trace_id, where.root_span_id
        )
        self._meter_provider, self._user_reader = _otel.make_meter_provider(resource, readers)
        #: The OTel mirror of each series is for attached readers (OTLP, Prometheus, the user's own);
        #: without one it would cost an instrument per series (~0.2 ms each) and be collected for nothing.
        self._mirroring = bool(readers)
        if settings.global_otel:
            trace.set_tracer_provider(self._tracer_provider)
            otel_metrics.set_meter_provider(self._meter_provider)
        self._tracer = self._tracer_provider.get_tracer("runtel")
        self._mirror_meter = self._meter_provider.get_meter(_otel.RUN_METRICS_SCOPE)
        self._nonfinite = self._mirror_meter.create_gauge(
            "runtel.nonfinite", description="1 while a metric's latest value is NaN or infinite"
        )
        self._nonfinite_seen: set[str] = set()
        self._user_series: set[str] = set()
        self.meter = self._meter_provider.get_meter(_otel.USER_METRICS_SCOPE)

        self._span_attributes = {"runtel.rank": where.job.rank} if where.job.distributed else {}
        self._root = self._tracer.start_span(
            f"run {self.name}" if where.job.primary else f"rank {where.job.rank}",
            context=where.parent,
            links=sweep.links() if sweep is not None else (),
            attributes={
                _otel.SPAN_KIND_ATTRIBUTE: "run",
                "runtel.run.name": self.name,
                "runtel.resumed": self.resumed,
                **self._span_attributes,
            },
        )
        self._span_id = self._root.get_span_context().span_id
        self._run_labels = {
            "runtel.run.id": self.id,
            "runtel.run.name": self.name,
            "runtel.project": self.project,
        }
        self._span_stack: list[tuple[trace.Span, object]] = []
        self._left_spans: list[tuple[trace.Span, int]] = []  # closed by their loop, not ended yet

        self.dir = where.run_dir
        from runtel.store.artifacts import ArtifactStore

        self.artifacts = ArtifactStore(where.own_dir)
        started = RunStarted(
            run_id=self.id,
            name=self.name,
            project=self.project,
            start_time=time.time(),
            config=clean_config,
            tags=settings.tags,
            resource=dict(resource.attributes),
            resumed=self.resumed,
        )
        from runtel.store.writer import StoreWriter

        self._store = StoreWriter(where.own_dir, backlog_points=settings.store_backlog_points)
        self._store.start(started)  # written before init() returns: the run is visible at once
        self._media = MediaWriter(where.own_dir, self._store)
        self._explicit_step(self._store.next_step() - 1)
        self._dispatcher = Dispatcher(
            self._store,
            exporters if where.job.primary else [],
            queue_size=settings.queue_size,
            block_timeout=settings.queue_block_timeout,
            retries=settings.export_retries,
            scratch_dir=where.own_dir / "adapted",
        )
        self._dispatcher.submit([started], include_store=False)
        to_exporters = partial(self._dispatcher.submit, include_store=False)
        self._edits = LiveEdits(self.dir, started.start_time, to_exporters, lambda: not self._finished)
        _health.register_instruments(
            self._meter_provider.get_meter(_health.HEALTH_SCOPE), self._dispatcher.health, self._run_labels
        )
        self._set_param_attributes(clean_config)

        self._wake = threading.Event()
        #: Cleared while the store writer is behind by more than ``_STORE_LAG_BATCHES`` batches: a
        #: ``log`` call that fills a batch then waits (at most ``_STORE_WAIT_S``), so what a kill -9
        #: can lose stays bounded however fast the loop logs.
        self._store_ready = threading.Event()
        self._store_ready.set()
        self._store_waits = 0
        #: Set once the flush has taken the calls queued before the last wake.
        self._taken = threading.Event()
        self._taken.set()
        self._flush_waits = 0
        self._flush_lock = threading.Lock()
        self._flush_thread = threading.Thread(target=self._flush_loop, name="runtel-flush", daemon=True)
        _switch.hold()
        self._flush_thread.start()
        self._system: SystemMetrics | None = None
        if settings.system_interval > 0:
            from runtel.system import SystemMetrics

            self._system = SystemMetrics(
                settings.system_interval, self._record_sample, resource_attributes=dict(resource.attributes)
            )
            self._system.start()
        _RUNS.add(self)
        self._logs = _otel.make_console_logs(
            resource, [p for e in exporters for p in _log_processors(e)] if settings.console else [], trace_id
        )
        from runtel._capture import ProcessCapture

        self._capture = ProcessCapture(
            where.own_dir,
            settings,
            self._store_captured,
            on_line=self._logs.console_line(self._current_span_id) if self._logs is not None else None,
            on_finish=self._logs.shutdown if self._logs is not None else None,
            descriptors=console_fds,
        )

    # ------------------------------------------------------------------ hot path
    # With the C extension ``log`` is HotPath's: it takes the common case (a dict of str to float or
    # int, an implicit or int step) itself and hands anything else, unchanged, to ``_log_general``.
    def _log_general(
        self, metrics: Mapping[str, Any], step: int | None = None, *, all_ranks: bool = False
    ) -> None:
        """Record ``metrics`` at ``step`` (default: previous step + 1, starting at 0).

        Values: int, float, bool, numpy scalars, one-element tensors; NaN and ±inf are
        kept exactly. :class:`runtel.Image`, ``Table``, ``Text`` and ``Audio`` (or a list of one
        of them: a gallery) are logged at the same step (see :mod:`runtel.media`). A bad name,
        value or step raises and records nothing of the call.
        Implicit steps are unique across threads. In a distributed job only rank 0's calls
        are recorded unless ``all_ranks`` (or the ``log_all_ranks`` setting); other ranks'
        steps still advance.
        """
        if self._finished:
            raise RunFinishedError(f"run {self.name} ({self.id}) has finished; log() is no longer possible")
        try:
            values = tuple(metrics.values())
        except AttributeError:
            raise InvalidMetricError(
                f"log() takes a mapping of metric name to value, got {type(metrics).__name__}"
            ) from None
        keys = tuple(metrics)
        for value in values:
            if type(value) is not float:
                try:
                    values = _coerce_values(keys, values)
                except InvalidMetricError:  # not a scalar: an Image, Table, Text, Audio or gallery?
                    if holds_media(values):
                        return self._log_with_media(metrics, step, all_ranks)
                    raise
                break
        series = self._layouts.get(keys)
        if series is None:
            series = self._layout(keys)
        if step is None:
            at = self._implicit_step()
        else:
            at = step if type(step) is int and 0 <= step <= MAX_STEP else check_step(step)
            self._explicit_step(at)
        self._queue_values(series, values, at, all_ranks)

    if not ACCELERATED:
        log = _log_general

    def _log_at(self, metrics: Mapping[str, Any], at: int, all_ranks: bool) -> None:
        """The scalars of a call whose step is already taken (one that also logs media): queued at
        ``at`` without moving the step again, which another thread may have advanced meanwhile."""
        keys = tuple(metrics)
        values = _coerce_values(keys, tuple(metrics.values()))
        self._queue_values(self._layouts.get(keys) or self._layout(keys), values, at, all_ranks)

    def _queue_values(
        self, series: tuple[int, ...], values: tuple[float, ...], at: int, all_ranks: bool
    ) -> None:
        if self._silent and not all_ranks:
            return
        self._queue_call(at, time.time(), self._span_id, series, values)
        queued = self._queued_calls()
        if queued >= self._wake_at:
            self._batch_queued(queued)

    def _batch_queued(self, queued: int) -> None:
        """Wake the flush for a batch; wait (bounded) while it has not taken the one before, or while
        the store writer is behind. The flush sets the next threshold once it has converted."""
        if not self._taken.is_set():  # _BEHIND_CALLS more calls since the wake, none taken yet
            self._flush_waits += 1
            self._taken.wait(_STORE_WAIT_S)
            self._wake_at = self._queued_calls() + _BEHIND_CALLS  # until the flush sets it again
            return
        self._taken.clear()
        self._wake_at = queued + _BEHIND_CALLS
        self._wake.set()
        if not self._store_ready.is_set():  # the writer is behind: wait for it, briefly
            self._store_waits += 1
            self._store_ready.wait(_STORE_WAIT_S)

    def _implicit_step(self) -> int:
        """The next implicit step, taken; refused once past the largest int64."""
        at = self._next_step()
        if at is None:
            raise InvalidStepError(
                f"the implicit step after {MAX_STEP} (the largest int64) does not fit; "
                "pass an explicit step= instead"
            )
        return at

    def _layout(self, keys: tuple[Any, ...]) -> tuple[int, ...]:
        """Series ids of a set of metric names, validated and cached for the next call like it."""
        ids = self._series_ids
        series = tuple(ids[key] if key in ids else self._register(key) for key in keys)
        if len(self._layouts) < _MAX_LAYOUTS:
            self._layouts[keys] = series
        return series

    def _record_sample(self, when: float, values: Mapping[str, float]) -> None:
        """System gauges' readings (on the sampler's thread) as series at the current step."""
        series_ids = tuple(self._register(name) for name in values)
        self._queue_call(self.step, when, self._span_id, series_ids, tuple(map(float, values.values())))

    def sample_system(self) -> dict[str, float]:
        """Take a system-metrics sample now (recorded in the run too); empty when sampling is off."""
        return self._system.sample_now() if self._system is not None else {}

    @property
    def root_span_id(self) -> int:
        """The span id of the run's root span (what a trial's span link points to)."""
        return int(self._root.get_span_context().span_id)

    @property
    def step(self) -> int:
        """The step of the last ``log`` call (0 before the first)."""
        return max(self._last_step, 0)

    def _register(self, key: object) -> int:
        name = check_name(key)
        if name in self._media_names:
            raise InvalidNameError(
                f"metric name {name!r} is already a media key of this run; use another name"
            )
        with self._lock:
            series = self._series_ids.get(name)
            if series is None:
                series = len(self._series_names)
                self._series_names.append(name)
                self._series_ids[name] = series
        return series

    # ------------------------------------------------------------------ params and spans
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters (nested dicts stay nested; merged with earlier calls)."""
        self._check_open()
        clean = check_params(params)
        self._emit(ParamsLogged(params=clean, time=time.time()))
        self._set_param_attributes(clean)

    def _set_param_attributes(self, params: Mapping[str, Any]) -> None:
        for key, value in _flat_attributes(params).items():
            self._root.set_attribute(f"runtel.param.{key}", value)

    @contextlib.contextmanager
    def span(self, name: str, *, kind: str = "phase", **attributes: Any) -> Iterator[trace.Span]:
        """A phase of training (``validate``, ``checkpoint``...) as a child span.

        Points logged inside carry its span id. An exception ends it with status ERROR and its type
        as ``error.type``; a generator closed inside it (``GeneratorExit``) is not an error.
        """
        self._check_open()
        span = self.start_span(name, kind=kind, **attributes)
        try:
            yield span
        except GeneratorExit:
            raise
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, _redact.redact(f"{type(exc).__name__}: {exc}")))
            span.set_attribute("error.type", _otel.error_type(type(exc)))
            raise
        finally:
            self.end_span(span)

    def epochs(self, n: int, start: int = 0) -> Iterator[int]:
        """``range(start, n)`` where each epoch is a child span of the run.

        Leaving the loop with ``break`` ends the epoch span OK. An exception escaping the loop
        body never reaches this generator: the span is closed at the moment the loop is left and
        ended once the run learns how (the run's ``with`` block or exit hook ends it ERROR with the
        exception's ``error.type``; the next span, or a normal ``finish()``, ends it OK).
        """
        for epoch in range(start, n):
            span = self.start_span(f"epoch {epoch}", kind="epoch", epoch=epoch)
            try:
                yield epoch
            except GeneratorExit:
                self._leave_span(span)
                raise
            self.end_span(span)

    def start_span(self, name: str, *, kind: str = "phase", **attributes: Any) -> trace.Span:
        """Open a child span without a ``with`` block (end it with :meth:`end_span`).

        ``runtel.step_start`` is the first step the span can hold (the step the next implicit
        ``log`` gets) and ``runtel.step_end`` the last step logged when it ends (0 before any): the
        step ranges of consecutive spans never overlap.
        """
        check_span_text(name, kind, attributes)
        self._end_left_spans(None)
        parent = self._span_stack[-1][0] if self._span_stack else self._root
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            attributes={
                _otel.SPAN_KIND_ATTRIBUTE: kind,
                "runtel.step_start": self._last_step + 1,
                **self._span_attributes,
                **_flat_attributes(dict(attributes)),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._span_stack.append((span, token))
        self._span_id = span.get_span_context().span_id
        return span

    def end_span(self, span: trace.Span) -> None:
        """End ``span`` (and any span opened inside it that is still open)."""
        for top, end_time in self._pop_spans(span):
            top.end(end_time)

    def _pop_spans(self, span: trace.Span) -> list[tuple[trace.Span, int]]:
        """Take ``span`` and the spans opened inside it off the stack, stamped with their end step."""
        popped = []
        while self._span_stack:
            top, token = self._span_stack.pop()
            with contextlib.suppress(ValueError):
                otel_context.detach(token)  # type: ignore[arg-type]
            top.set_attribute("runtel.step_end", self.step)
            popped.append((top, time.time_ns()))
            if top is span:
                break
        self._span_id = (
            self._span_stack[-1][0].get_span_context().span_id
            if self._span_stack
            else self._root.get_span_context().span_id
        )
        return popped

    def _leave_span(self, span: trace.Span) -> None:
        """Close ``span`` now but end it once the run knows whether its loop was left by an exception."""
        self._left_spans.extend(self._pop_spans(span))

    def _end_left_spans(self, error_type: str | None) -> None:
        left, self._left_spans = self._left_spans, []
        for span, end_time in left:
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR, error_type))
                span.set_attribute("error.type", error_type)
            span.end(end_time)

    # ------------------------------------------------------------------ artifacts, models, figures
    def log_artifact(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        version: bool = True,
        metadata: Mapping[str, Any] | None = None,
        *,
        kind: str = "artifact",
    ) -> ArtifactVersion:
        """Copy a file or directory into the run now (SHA-256 checked, deduplicated, versioned)."""
        self._check_open()
        self._check_owner("log_artifact")
        stored = self.artifacts.add(
            path, name, version=version, step=self.step, kind=kind, metadata=dict(metadata or {})
        )
        self._emit(stored.logged(time.time()))
        return stored

    def _store_captured(self, path: Path, name: str, kind: str, metadata: dict[str, Any]) -> None:
        """A file of the run's capture (diff, packages, console) as an artifact, from any thread."""
        stored = self.artifacts.add(path, name, version=True, kind=kind, metadata=metadata)
        self._emit(stored.logged(time.time()))

    def _current_span_id(self) -> int:
        return self._span_id

    def log_model(
        self,
        model: Any,
        name: str,
        framework: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        version: bool = True,
    ) -> ArtifactVersion:
        """A model file or directory, or a torch ``nn.Module`` (its ``state_dict``), as a new version."""
        from runtel.store.artifacts import check_artifact_name

        self._check_owner("log_model")
        details = {**dict(metadata or {}), "framework": framework}
        if isinstance(model, str | os.PathLike):
            return self.log_artifact(model, name, version, details, kind="model")
        with tempfile.TemporaryDirectory(prefix="runtel-model-") as scratch:
            saved, file_format = save_torch_module(model, Path(scratch), check_artifact_name(name)[-1])
            details.update(framework=framework or "pytorch", format=file_format)
            return self.log_artifact(saved, name, version, details, kind="model")

    def log_figure(self, figure: Any, name: str, step: int | None = None) -> Path:
        """A matplotlib figure as a PNG in ``plots/``, one file per step (``<name>_step<N>.png``)."""
        from runtel.store._portable import collision_key
        from runtel.store.artifacts import check_artifact_name

        self._check_open()
        self._check_owner("log_figure")
        parts = check_artifact_name(name)
        known = self._figure_names.setdefault(collision_key(name), name)
        if known != name:
            raise ArtifactError(
                f"figure name {name!r} differs from figure {known!r} only in case or Unicode normalisation "
                "(NFC/NFD); macOS and Windows would write both to one file"
            )
        at = self.step if step is None else check_step(step)
        stem, _, suffix = parts[-1].rpartition(".") if "." in parts[-1] else (parts[-1], "", "png")
        target = self.dir.joinpath("plots", *parts[:-1], f"{stem}_step{at}.{suffix or 'png'}")
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format=suffix or "png")
        self._emit(FigureLogged(name=name, path=str(target), step=at, time=time.time()))
        return target

    def log_histogram(self, name: str, values: Any, step: int | None = None, bins: int = 64) -> None:
        """A distribution (numpy or torch) as bin edges and counts, with exact min/max/mean/std."""
        self._check_open()
        record = make_histogram(
            check_name(name, "histogram"), values, self.step if step is None else check_step(step), bins
        )
        self._emit(record)

    # ------------------------------------------------------------------ editing (runtel.store.edits)
    @property
    def tags(self) -> Tags:
        """The run's current tags as a set: ``run.tags.add("baseline")`` is recorded and sent to the
        exporters that have tags (W&B, MLflow, Neptune) at once."""
        return self._edits.tags

    def set_note(self, note: str) -> None:
        """Set the run's free-text note (``""`` clears it); recorded and sent to the exporters at once."""
        self._edits.set_note(note)

    def rename(self, name: str) -> None:
        """Change the run's display name (its folder and id stay); recorded and sent to the exporters at
        once. ``run.name`` follows; the OpenTelemetry resource keeps the name the run started with."""
        self.name = self._edits.rename(name)

    # ------------------------------------------------------------------ lifecycle
    def finish(
        self, status: str = "completed", *, error: str | None = None, error_type: str | None = None
    ) -> None:
        """Flush everything, end the trace and close every exporter. Safe to call twice.

        A run that did not complete gets ``error.type`` on its root span and on the spans still
        open: ``error_type`` (the exception's type name), or ``_OTHER`` when none is known. In a
        forked child it does nothing: the run belongs to the parent, which finishes it.
        """
        if self._finished or os.getpid() != self._owner_pid:
            return
        if status not in ("completed", "failed", "crashed", "killed"):
            raise ConfigError(f"status must be completed, failed, crashed or killed; got {status!r}")
        error = None if error is None else _redact.redact(error)  # a traceback may quote credentials
        failed_as = None if status == "completed" else (error_type or "_OTHER")
        self._capture.finish()  # environment and console stored before the run's last records
        if self._system is not None:
            self._system.shutdown()
        self._end_left_spans(failed_as)
        while self._span_stack:
            span = self._span_stack[-1][0]
            if failed_as is not None:
                span.set_status(Status(StatusCode.ERROR, failed_as))
                span.set_attribute("error.type", failed_as)
            self.end_span(span)
        self._root.set_attribute("runtel.step_end", self.step)
        if failed_as is not None:
            self._root.set_attribute("error.type", failed_as)
        self._root.set_status(Status(StatusCode.OK if status == "completed" else StatusCode.ERROR, error))
        self._root.end()
        self._finished = True
        self._wake.set()
        self._flush_thread.join()
        self._flush()
        self._media.give_up()  # media files the disk still refuses: counted as lost
        _switch.release()
        self._dispatcher.wait_for_store()  # the writer's statistics then cover every point stored
        self._dispatcher.submit(self._edits.others(), include_store=False)  # e.g. `runtel tag` meanwhile
        self._dispatcher.submit([self._store.run_ended(status, error, time.time())])
        if self._flush_waits:
            logger.info(
                "runtel: log() waited %d time(s), at most %.1f s each, for the flush to take its queue",
                self._flush_waits,
                _STORE_WAIT_S,
            )
        if self._store_waits:
            logger.info(
                "runtel: log() waited %d time(s), at most %.1f s each, for the store writer to catch up",
                self._store_waits,
                _STORE_WAIT_S,
            )
        if self._media.waits:
            logger.info(
                "runtel: media logging waited %d time(s) for the flush to encode what was queued",
                self._media.waits,
            )
        reports = self._dispatcher.shutdown(self._settings.export_timeout)
        try:
            self._store.close({r.name: r.as_dict() for r in reports})  # StoreWriteError if data is missing
        finally:
            self._meter_provider.shutdown()
            self._tracer_provider.shutdown()
            _forget(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("killed", error="KeyboardInterrupt", error_type="KeyboardInterrupt")
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            self.finish("failed", error=text, error_type=_otel.error_type(exc_type))

    def _check_open(self) -> None:
        if self._finished:
            raise RunFinishedError(f"run {self.name} ({self.id}) has finished")

    def _check_owner(self, call: str) -> None:
        """Files written by a forked child would land in the parent's run behind its back."""
        if os.getpid() != self._owner_pid:
            raise RunForkedError(
                f"{call}() in a forked child (pid {os.getpid()}) of the process that owns run {self.name} "
                f"({self.id}, pid {self._owner_pid}): return the file to the parent and log it there, "
                "or start a run of the child's own with runtel.init()"
            )

    def _detach_in_child(self) -> None:
        """Run in a forked child: the parent's threads are gone and its locks may be held forever, so
        the child gets fresh locks and a queue that drops what it records (with one warning)."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._child_warned = False
        self._queue = _ChildQueue(self)
        self._detached = True

    def _dropped_in_child(self) -> None:
        """The first record of a forked child: warn once, then drop silently at the parent's cost."""
        if self._child_warned:
            return
        self._child_warned = True
        self._queue = deque(maxlen=0)
        logger.warning(
            "runtel: run %s (%s) belongs to process %d; this forked child (pid %d, e.g. a DataLoader "
            "worker) cannot record into it, so what it logs is dropped. Log from the parent, or start a "
            "run of the child's own with runtel.init(). (Warned once per child.)",
            self.name,
            self.id,
            self._owner_pid,
            os.getpid(),
        )

    # ------------------------------------------------------------------ background flush
    def _flush_loop(self) -> None:
        """Flush once per interval, counted from the start of the last flush (so a slow write
        does not stretch the gap), and early when ``_wake_at`` calls (about ``_BATCH_POINTS``) wait."""
        interval = self._settings.flush_interval
        next_heartbeat = time.monotonic() + self._settings.heartbeat_interval
        due = time.monotonic() + interval
        while not self._finished:
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            if self._finished:
                break
            due = time.monotonic() + interval
            try:
                self._flush()
                _memory.release_free_memory()
                if time.monotonic() >= next_heartbeat:
                    now = time.time()
                    _health.write_live(self.dir, self._dispatcher.health(), now)
                    self._dispatcher.submit([Heartbeat(time=now)])
                    next_heartbeat = time.monotonic() + self._settings.heartbeat_interval
            except Exception:
                logger.exception("runtel: background flush failed; will retry")

    def flush(self, timeout: float | None = None, *, exporters: bool = False) -> bool:
        """Write everything logged so far to the local store now; False if ``timeout`` ran out or the
        store cannot write at the moment (disk full: it keeps a backlog and retries by itself).

        For readers that must see the latest points at once (the store is otherwise at most
        ``flush_interval`` seconds behind). With ``exporters=True`` every exporter also delivers
        what was logged so far and flushes what it buffers (before a checkpoint, say), waiting at
        most ``timeout`` or else ``export_timeout`` seconds for them. It does I/O: keep it out of the
        hot loop.
        """
        if self._finished:
            return True
        if os.getpid() != self._owner_pid:
            self._dropped_in_child()
            return False
        self._flush()
        if exporters:
            bound = self._settings.export_timeout if timeout is None else timeout
            return self._dispatcher.force_flush(bound)
        return self._dispatcher.wait_for_store(timeout)

    def _flush(self) -> None:
        if os.getpid() != self._owner_pid:  # the parent's store and threads are not the child's
            return
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        retried = self._media.retry()  # media files the disk refused at an earlier flush
        if retried:
            self._dispatcher.submit(retried)
        for name, when, value in _otel.user_points(self._user_reader, self._user_totals):
            self._user_series.add(name)
            self._queue_call(self.step, when, self._span_id, (self._register(name),), (value,))
        self._take_open_block()  # the points logged so far join the queue, in order
        queue = self._queue
        count = len(queue)
        if not count:
            self._wake_at = min(self._wake_at, _WAKE_MAX_CALLS)
            return
        # Taken in bulk at C speed: no Python bytecode per call while the training thread waits.
        items: list[Any] = list(islice(iter(queue.popleft, None), count))
        self._taken.set()
        names = tuple(self._series_names)  # after popping: every popped call's names are in it
        batch: list[Record] = []
        begin = 0
        calls = count
        for at in np.flatnonzero(~np.fromiter(map(isinstance, items, repeat(tuple)), bool, count)).tolist():
            _add_points(batch, items[begin:at], names)
            item = items[at]
            if type(item) is PointsBlock:  # the C hot path's columns, ready as they are
                batch.append(_block_points(item, names))
                calls += item.calls - 1
            elif type(item) is PendingMedia:  # encoded and written here, off the training thread
                batch.extend(self._media.write(item))
                calls -= 1
            else:
                batch.append(item)
                calls -= 1
            begin = at + 1
        _add_points(batch, items[begin:] if begin else items, names)
        points = sum(len(record) for record in batch if isinstance(record, MetricPoints))
        width = points / calls if points and calls > 0 else 1.0
        wake_at = min(_WAKE_MAX_CALLS, max(_WAKE_MIN_CALLS, int(_BATCH_POINTS / width)))
        self._wake_at = wake_at
        del items
        self._dispatcher.submit(batch)
        if self._mirroring:
            self._mirror(batch)
        self._keep_up_with_the_store(wake_at)

    def _keep_up_with_the_store(self, wake_at: int) -> None:
        """Hold the next batch while the store writer is more than a few batches behind (bounded)."""
        if self._dispatcher.store_queue_depth() <= _STORE_LAG_BATCHES:
            return
        self._store_ready.clear()
        # Re-armed after the clear: a call that passed the threshold just before it (and disarmed it)
        # reaches it again at its next call and waits, so the queue cannot grow while we wait here.
        self._wake_at = wake_at
        try:
            deadline = time.monotonic() + _STORE_WAIT_S
            while self._dispatcher.store_queue_depth() > 1 and time.monotonic() < deadline:
                time.sleep(0.002)
        finally:
            self._store_ready.set()

    def _mirror(self, batch: Sequence[Record]) -> None:
        """Set each run metric's OTel gauge to its latest value, for any attached MetricReader."""
        for record in batch:
            if not isinstance(record, MetricPoints):
                continue
            for name, positions in record.by_name().items():
                if name in self._user_series:
                    continue  # already an OTel instrument of the run's meter
                gauge = self._mirrors.get(name)
                if gauge is None:
                    gauge = self._mirrors[name] = self._mirror_meter.create_gauge(_otel.instrument_name(name))
                latest = float(record.values[positions[-1]])
                labels = {"runtel.metric": name, **self._run_labels}
                if math.isfinite(latest):
                    gauge.set(latest, labels)
                    if name in self._nonfinite_seen:
                        self._nonfinite.set(0, labels)
                else:  # OTel gauges refuse NaN/inf (the store keeps them): flag it for alerts instead
                    self._nonfinite.set(1, labels)
                    self._nonfinite_seen.add(name)


def _coerce_values(keys: tuple[Any, ...], values: tuple[Any, ...]) -> tuple[float, ...]:
    """A call's values as float64, exactly, when one of them is not a Python float."""
    return tuple(
        value
        if type(value) is float
        else float(value)
        if type(value) is int and -MAX_EXACT_INT <= value <= MAX_EXACT_INT
        else coerce_value(key, value)
        for key, value in zip(keys, values, strict=True)
    )


def _block_points(block: PointsBlock, names: tuple[str, ...]) -> MetricPoints:
    """A block of the C hot path as a batch: views of its records (no copy), grouped ones beside.
    Read-only: the store and every exporter share them."""
    records = _read_only(block.records, SERIES_DTYPE)
    index = _read_only(block.index, np.int32)
    return MetricPoints(
        names=names,
        index=index,
        steps=records["step"],
        times=records["time"],
        values=records["value"],
        span_ids=records["span_id"],
        grouped=None
        if block.grouped is None or block.series is None
        else (_read_only(block.grouped, SERIES_DTYPE), _read_only(block.series, np.int32)),
    )


def _read_only(buffer: bytearray, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """A view that cannot be made writable again (its base is a read-only memoryview)."""
    view: npt.NDArray[Any] = np.frombuffer(memoryview(buffer).toreadonly(), dtype)
    return view


def _add_points(batch: list[Record], calls: list[_Call], names: tuple[str, ...]) -> None:
    """Queued calls as one batch of columns (each call's step, time and span repeated per point).

    Each column is one C-speed pass over the calls (``np.fromiter``, the values too: half the
    time of building a flat list for ``np.array``, the flush thread's largest share of the
    interpreter lock); when every call logged the same names (the usual training loop) the
    series ids are one tiled array.
    """
    n = len(calls)
    if n > _MAX_BATCH_CALLS:  # a backlog: written as several blocks, each one a short write
        for begin in range(0, n, _MAX_BATCH_CALLS):
            _add_points(batch, calls[begin : begin + _MAX_BATCH_CALLS], names)
        return
    if not n:
        return
    layouts = list(map(_IDS, calls))
    first = layouts[0]
    if layouts.count(first) == n:
        width = len(first)
        total = width * n
        index = np.tile(np.array(first, np.int32), n)
        counts: int | npt.NDArray[np.int64] = width
    else:
        counts = np.fromiter(map(len, layouts), np.int64, n)
        total = int(counts.sum())
        index = np.fromiter(chain.from_iterable(layouts), np.int32, total)
    if not total:
        return
    batch.append(
        MetricPoints(
            names=names,
            index=index,
            steps=np.repeat(np.fromiter(map(_STEP, calls), np.int64, n), counts),
            times=np.repeat(np.fromiter(map(_TIME, calls), np.float64, n), counts),
            values=np.fromiter(chain.from_iterable(map(_VALUES, calls)), np.float64, total),
            span_ids=np.repeat(np.fromiter(map(_SPAN, calls), np.uint64, n), counts),
        )
    )


def _git_revision() -> str | None:
    """The commit checked out in the working directory (OTel's ``vcs.ref.head.revision``), if any."""
    import subprocess

    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = result.stdout.strip()
    return revision if result.returncode == 0 and revision else None


def _log_processors(exporter: Exporter) -> Sequence[Any]:
    """The OTel log record processors an exporter plugs in (OTLP: the console as log records)."""
    hook = getattr(exporter, "log_record_processors", None)
    return list(hook()) if callable(hook) else []


def _sweep_info(sweep: SweepRef | None, run_id: str) -> SweepInfo | None:
    if sweep is None:
        return None
    from runtel.sweep import SweepInfo

    return SweepInfo(sweep.id or run_id, sweep.name, sweep.role, sweep.trial)


def _flat_attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as OTel attribute values (str/bool/int/float; anything else as JSON)."""
    out: dict[str, Any] = {}
    for key, value in flatten_params(dict(params)).items():
        out[key] = value if isinstance(value, str | bool | int | float) else json.dumps(value, default=str)
    return out


class _ChildQueue(deque[Any]):
    """A forked child's queue: what the child records is dropped, with one warning per run.

    Not an error: the usual child is a DataLoader worker running code shared with the parent, and
    raising there would stop the parent's training loop. Its first ``append`` replaces it by an empty
    bounded deque, so later calls cost no more than in the parent."""

    def __init__(self, run: Run) -> None:
        super().__init__(maxlen=0)
        self._run = run

    def append(self, item: object) -> None:
        self._run._dropped_in_child()


_ACTIVE: list[Run] = []
_ACTIVE_LOCK = threading.Lock()
#: Every live run, for the fork hook (weak: a finished run that nothing uses is not kept alive).
_RUNS: weakref.WeakSet[Run] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child inherits its parent's runs but none of their threads: it detaches from each and
    forgets them, so its exit hook neither waits for a flush thread nor writes into the parent's run."""
    global _ACTIVE_LOCK
    _ACTIVE_LOCK = threading.Lock()
    _ACTIVE.clear()
    for run in list(_RUNS):
        run._detach_in_child()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to survive
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _remember(run: Run) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.append(run)


def _forget(run: Run) -> None:
    with _ACTIVE_LOCK:
        if run in _ACTIVE:
            _ACTIVE.remove(run)


def active_runs() -> list[Run]:
    with _ACTIVE_LOCK:
        return list(_ACTIVE)
