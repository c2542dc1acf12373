"""Everything runtel needs from OpenTelemetry, in one place, through public APIs only.

A run owns a ``TracerProvider`` (the run is the root span of a trace; its trace id is
the run id) and a ``MeterProvider`` (one gauge per run metric, mirrored from the
background flush, plus the user's own instruments collected at every flush).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runtel._values import MAX_NAME_LENGTH
from runtel.records import SpanEnded

logger = logging.getLogger("runtel")
#: Room left in a series name for the ``/count``... suffixes of a histogram's series.
_USER_NAME_LIMIT = MAX_NAME_LENGTH - len("/count")

#: Scope of the gauges that mirror logged series; our own reader skips it (they are series already).
RUN_METRICS_SCOPE = "runtel.metrics"
#: Scope of ``run.meter``: the user's own instruments, recorded as series at every flush.
USER_METRICS_SCOPE = "runtel.user"
SPAN_KIND_ATTRIBUTE = "runtel.span.kind"
#: Scopes our own reader skips: mirrors of logged series, and exporter health (``runtel._health``).
_NOT_SERIES = frozenset({RUN_METRICS_SCOPE, "runtel.health"})

#: What a series name may not hold: control characters and lone surrogates (not UTF-8).
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_INSTRUMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./\-]{0,254}")


def remote_parent(environ: Mapping[str, str]) -> Context | None:
    """The W3C ``TRACEPARENT`` (and ``TRACESTATE``) of the environment as a parent context."""
    carrier = {key.lower(): value for key, value in environ.items() if key in ("TRACEPARENT", "TRACESTATE")}
    if "traceparent" not in carrier:
        return None
    context = TraceContextTextMapPropagator().extract(carrier)
    span_context = trace.get_current_span(context).get_span_context()
    return context if span_context.is_valid else None


def make_resource(attributes: Mapping[str, Any]) -> Resource:
    return Resource.create(dict(attributes))


def run_trace_id(parent: Context | None) -> int:
    """The run's trace id: the joined trace's, or a new random one."""
    if parent is not None:
        return trace.get_current_span(parent).get_span_context().trace_id
    return RandomIdGenerator().generate_trace_id()


class _RunIdGenerator(RandomIdGenerator):
    """Gives the run span the ids chosen before the providers exist (the trace id names the resource;
    a distributed run's root span id is known to every rank)."""

    def __init__(self, trace_id: int, first_span_id: int | None) -> None:
        self._trace_id = trace_id
        self._first_span_id = first_span_id

    def generate_trace_id(self) -> int:
        return self._trace_id

    def generate_span_id(self) -> int:
        if self._first_span_id is not None:
            span_id, self._first_span_id = self._first_span_id, None
            return span_id
        return super().generate_span_id()


def remote_span_context(trace_id: int, span_id: int) -> Context:
    """A parent context for a span whose parent lives in another process (rank 0's run span)."""
    parent = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(1))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def make_tracer_provider(
    resource: Resource, processors: Iterable[SpanProcessor], trace_id: int, root_span_id: int | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=resource, id_generator=_RunIdGenerator(trace_id, root_span_id))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def make_meter_provider(
    resource: Resource, readers: Sequence[MetricReader]
) -> tuple[MeterProvider, InMemoryMetricReader]:
    """The run's provider and the delta reader runtel collects user instruments with."""
    own = InMemoryMetricReader(preferred_temporality=_DELTA)
    return MeterProvider(resource=resource, metric_readers=[own, *readers]), own


_DELTA: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    ObservableUpDownCounter: AggregationTemporality.DELTA,
    ObservableGauge: AggregationTemporality.DELTA,
}
try:  # The synchronous Gauge's SDK class is not exported (1.45); without DELTA it re-reports stale values.
    from opentelemetry.sdk.metrics._internal.instrument import Gauge as _SdkSyncGauge

    _DELTA[_SdkSyncGauge] = AggregationTemporality.DELTA
except ImportError:  # pragma: no cover - a future SDK moved it; stale gauge values then repeat per flush
    pass


def span_id_hex(span_id: int) -> str:
    return format(span_id, "016x")


def trace_id_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


class RecordingSpanProcessor(SpanProcessor):
    """Turns each ended span into a :class:`SpanEnded` record; keeps nothing in memory."""

    def __init__(self, emit: Callable[[SpanEnded], None]) -> None:
        self._emit = emit

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is None:
            return
        attributes = dict(span.attributes or {})
        kind = attributes.pop(SPAN_KIND_ATTRIBUTE, "phase")
        status = {0: "unset", 1: "ok", 2: "error"}[span.status.status_code.value]
        self._emit(
            SpanEnded(
                name=span.name,
                kind=kind if kind in ("run", "epoch", "phase") else "phase",
                trace_id=trace_id_hex(context.trace_id),
                span_id=span_id_hex(context.span_id),
                parent_span_id=span_id_hex(span.parent.span_id) if span.parent else None,
                start_time=(span.start_time or 0) / 1e9,
                end_time=(span.end_time or 0) / 1e9,
                attributes=attributes,
                status=status,  # type: ignore[arg-type]
            )
        )


def error_type(kind: type[BaseException]) -> str:
    """OTel's ``error.type`` for an exception class: its qualified name, module-prefixed unless builtin."""
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def instrument_name(metric: str) -> str:
    """A valid OTel instrument name for any metric name (the original goes in an attribute)."""
    if _INSTRUMENT_NAME.fullmatch(metric):
        return metric
    cleaned = re.sub(r"[^A-Za-z0-9_./\-]", "_", metric)
    if not cleaned[:1].isalpha():
        cleaned = "m_" + cleaned
    return cleaned[:255]


def user_points(reader: InMemoryMetricReader, totals: dict[str, float]) -> list[tuple[str, float, float]]:
    """Collect the user's instruments as ``(series name, time, value)``.

    Readings are delta; sums are accumulated in ``totals`` so a counter's series is its
    running total, as a user reading a chart expects. Histograms give count/sum/min/max
    of each flush window.
    """
    data = reader.get_metrics_data()
    out: list[tuple[str, float, float]] = []
    if data is None:
        return out
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name in _NOT_SERIES:
                continue
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    name = _user_series_name(metric.name + _attribute_suffix(point.attributes))
                    when = point.time_unix_nano / 1e9
                    if isinstance(point, NumberDataPoint):
                        value = float(point.value)
                        if isinstance(metric.data, Sum):
                            value = totals[name] = totals.get(name, 0.0) + value
                        out.append((name, when, value))
                    else:
                        out.append((f"{name}/count", when, float(point.count)))
                        out.append((f"{name}/sum", when, float(point.sum)))
                        out.append((f"{name}/min", when, float(point.min)))
                        out.append((f"{name}/max", when, float(point.max)))
    return out


def _user_series_name(name: str) -> str:
    """``name`` if a series may have it; else its storable start and a hash of the whole, so that the
    points of an instrument with long attribute values, or values holding control characters or lone
    surrogates (which no series name may have), are kept under a name a warning gives once."""
    storable = _UNSTORABLE.sub("\ufffd", name)
    if len(name) <= _USER_NAME_LIMIT and storable == name:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    short = storable[: _USER_NAME_LIMIT - 9] + "~" + digest
    if short not in _shortened:
        _shortened.add(short)
        logger.warning(
            "runtel: the series of instrument point %r is recorded as %r (too long, or not storable text)",
            name,
            short,
        )
    return short


_shortened: set[str] = set()


def _attribute_suffix(attributes: Mapping[str, Any] | None) -> str:
    if not attributes:
        return ""
    return "{" + ",".join(f"{key}={attributes[key]}" for key in sorted(attributes)) + "}"


class ConsoleLogs:
    """The run's console lines as OpenTelemetry log records of its trace (for OTLP's ``/v1/logs``).

    The OTel logs SDK is still private (``opentelemetry.sdk._logs``): this class is the only place
    runtel touches it, and :func:`make_console_logs` gives None where it is missing or changed.
    """

    def __init__(self, provider: Any, trace_id: int) -> None:
        self._provider = provider
        self._logger = provider.get_logger("runtel.console")
        self._trace_id = trace_id

    def console_line(self, span_id: Callable[[], int]) -> Callable[[str, str], None]:
        """A listener emitting each line with the run's current span (stderr as ERROR, stdout INFO; a
        line of stdout and stderr merged into one pipe, ``stdout+stderr``, has neither severity nor
        ``log.iostream``, since which stream wrote it is not known)."""
        from opentelemetry._logs import SeverityNumber

        severities = {"stdout": (SeverityNumber.INFO, "INFO"), "stderr": (SeverityNumber.ERROR, "ERROR")}

        def emit(stream: str, text: str) -> None:
            number, name = severities.get(stream, (SeverityNumber.UNSPECIFIED, None))
            self._logger.emit(
                timestamp=time.time_ns(),
                context=remote_span_context(self._trace_id, span_id()),
                severity_number=number,
                severity_text=name,
                body=text,
                attributes={"log.iostream": stream} if stream in severities else {},
            )

        return emit

    def shutdown(self) -> None:
        self._provider.shutdown()


def make_console_logs(resource: Resource, processors: Sequence[Any], trace_id: int) -> ConsoleLogs | None:
    """A logger provider feeding ``processors`` (None without any, or without a usable logs SDK)."""
    if not processors:
        return None
    try:
        from opentelemetry.sdk._logs import LoggerProvider
    except ImportError:  # pragma: no cover - a future SDK moved it
        logger.warning("runtel: this opentelemetry-sdk has no logs SDK; console lines are not sent over OTLP")
        return None
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for processor in processors:
        provider.add_log_record_processor(processor)
    return ConsoleLogs(provider, trace_id)


def otlp_log_processor(protocol: str, options: Mapping[str, Any]) -> Any:
    """A batch processor over the official OTLP log exporter (HTTP ``/v1/logs`` or gRPC)."""
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    kwargs: dict[str, Any] = {"headers": options.get("headers"), "timeout": options.get("timeout")}
    endpoint = options.get("endpoint")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter

        return BatchLogRecordProcessor(
            GrpcExporter(endpoint=endpoint, insecure=options.get("insecure"), **kwargs)
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    if endpoint is not None:
        kwargs["endpoint"] = f"{endpoint.rstrip('/')}/v1/logs"
    return BatchLogRecordProcessor(OTLPLogExporter(**kwargs))
