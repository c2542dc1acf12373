"""Sends a run's trace, metrics and console over OTLP (HTTP/protobuf or gRPC) with the official exporters.

Nothing here translates records: the run's own ``TracerProvider`` and ``MeterProvider`` already
hold the run as a trace (run span, epoch and phase spans) and every run metric as a gauge, so this
exporter only plugs a ``BatchSpanProcessor`` and a ``PeriodicExportingMetricReader`` into them
(:class:`~runtel.exporters.base.TelemetryHooks`). The record stream is acknowledged and ignored.

Configuration follows OpenTelemetry's environment variables: ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``, ``_INSECURE``, certificates and their per-signal
``_TRACES_*`` / ``_METRICS_*`` forms are read by the official exporters; ``OTEL_EXPORTER_OTLP_PROTOCOL``
(and ``_TRACES_PROTOCOL`` / ``_METRICS_PROTOCOL``) choose the protocol here; ``OTEL_METRIC_EXPORT_INTERVAL``
sets the metric interval. ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` choose the signals as
the OTel SDK reads them (a comma-separated list: ``otlp``, the default, sends the signal; ``none`` or
a list without ``otlp`` turns it off) and ``OTEL_SDK_DISABLED=true`` turns all off. The run's console
lines (see docs/reproducibility.md) go out as OpenTelemetry log records of the run's trace (``/v1/logs``),
chosen by ``OTEL_LOGS_EXPORTER`` the same way. Keyword arguments win over the environment.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from runtel.errors import ConfigError, MissingExtraError
from runtel.exporters.base import Capabilities, ExportResult
from runtel.records import Record

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("runtel")

OtlpProtocol = Literal["http/protobuf", "grpc"]
Signal = Literal["traces", "metrics", "logs"]
_PROTOCOLS: tuple[OtlpProtocol, ...] = ("http/protobuf", "grpc")

CAPABILITIES = Capabilities(
    # Reads only the run's OpenTelemetry pipeline (spans, and each run metric's latest value at each
    # collect, as a gauge), so the dispatcher gives it no records and nothing is adapted for it.
    records=False,
    every_rank=True,
)


class OtlpExporter:
    """Plugs OTLP span, metric and log export into a run's OpenTelemetry providers.

    ``endpoint`` is the base URL (``http://collector:4318``; ``/v1/traces`` and ``/v1/metrics`` are
    appended for HTTP) or, for gRPC, ``host:port`` or a URL; ``None`` leaves it to the
    ``OTEL_EXPORTER_OTLP_*`` variables (default ``localhost:4318`` / ``4317``). ``protocol`` is
    ``http/protobuf`` (default) or ``grpc``. ``insecure`` applies to gRPC only (HTTP follows the URL's
    scheme); ``/v1/logs`` is appended for the console's log records. ``export_interval`` is in
    seconds. ``traces=False``, ``metrics=False`` or ``logs=False`` turns a signal off (an MLflow
    server ingests traces only); left as None, ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` /
    ``OTEL_LOGS_EXPORTER`` decide. Live only: a stored run replayed to it is refused.
    """

    name = "otlp"
    capabilities = CAPABILITIES

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        insecure: bool | None = None,
        export_interval: float | None = None,
        timeout: float | None = None,
        traces: bool | None = None,
        metrics: bool | None = None,
        logs: bool | None = None,
    ) -> None:
        if traces is False and metrics is False and logs is False:
            raise ConfigError(
                "traces=False, metrics=False and logs=False leave the otlp exporter nothing to send"
            )
        traces, metrics = _signal_on("traces", traces), _signal_on("metrics", metrics)
        self._logs_protocol = _protocol("logs", protocol) if _signal_on("logs", logs) else None
        if not (traces or metrics or self._logs_protocol):
            logger.warning(
                "runtel: OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER (or "
                "OTEL_SDK_DISABLED) turn every signal off: the otlp exporter sends nothing"
            )
        if export_interval is not None and not export_interval > 0:
            raise ConfigError(
                f"export_interval must be a positive number of seconds, got {export_interval!r}"
            )
        self._interval_millis = None if export_interval is None else export_interval * 1000.0
        self._span_exporter: SpanExporter | None = None
        self._metric_exporter: MetricExporter | None = None
        options = {"endpoint": endpoint, "headers": headers, "insecure": insecure, "timeout": timeout}
        if traces:
            self._span_exporter = _make_exporter("traces", _protocol("traces", protocol), options)
        if metrics:
            self._metric_exporter = _make_exporter("metrics", _protocol("metrics", protocol), options)
        self._options = options
        self._processors: list[SpanProcessor] | None = None
        self._readers: list[MetricReader] | None = None
        self._log_processors: list[Any] | None = None

    # ------------------------------------------------------------------ TelemetryHooks
    def span_processors(self) -> Sequence[SpanProcessor]:
        """One ``BatchSpanProcessor`` (created on first call; the run's provider shuts it down)."""
        if self._processors is None:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter = self._span_exporter
            self._processors = [] if exporter is None else [BatchSpanProcessor(exporter)]
        return self._processors

    def metric_readers(self) -> Sequence[MetricReader]:
        """One ``PeriodicExportingMetricReader`` (created on first call: it starts a thread)."""
        if self._readers is None:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            exporter = self._metric_exporter
            self._readers = (
                []
                if exporter is None
                else [PeriodicExportingMetricReader(exporter, export_interval_millis=self._interval_millis)]
            )
        return self._readers

    def log_record_processors(self) -> Sequence[Any]:
        """One batch log processor for the run's console lines (created on first call)."""
        if self._log_processors is None:
            self._log_processors = []
            if self._logs_protocol is not None:
                from runtel import _otel

                try:
                    self._log_processors.append(_otel.otlp_log_processor(self._logs_protocol, self._options))
                except ImportError as exc:
                    raise MissingExtraError(
                        f"the otlp exporter needs the OTLP log exporter for {self._logs_protocol}: "
                        "pip install runtel[otlp]"
                    ) from exc
        return self._log_processors

    # ------------------------------------------------------------------ Exporter
    def export(self, records: Sequence[Record]) -> ExportResult:
        """Live records travel through the providers; without them (a replay) nothing could be sent."""
        if self._processors is None and self._readers is None:
            logger.error(
                "runtel: the otlp exporter sends what a live run's OpenTelemetry providers produce; "
                "it cannot replay a stored run"
            )
            return ExportResult.FAILURE
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send the ended spans, the console lines read so far and a fresh collection of every metric now."""
        done = True
        for processor in [*(self._processors or ()), *(self._log_processors or ())]:
            done = processor.force_flush(timeout_millis) and done
        for reader in self._readers or ():
            done = reader.force_flush(timeout_millis) and done
        return done

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Send the ended spans; the final metrics go out when the run shuts its ``MeterProvider`` down.

        The run ends every span and sets its final gauges before shutting exporters down, then shuts
        its providers down, which makes the reader collect and export one last time. Metrics are not
        flushed here as well: with the collector unreachable, that would add one more failed export
        (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default) to ``finish()``.
        """
        for processor in self._processors or ():
            if not processor.force_flush(timeout_millis):
                logger.warning("runtel: the otlp exporter could not deliver the run's spans")


def _signal_on(signal: Signal, keyword: bool | None) -> bool:
    """The keyword, else ``OTEL_SDK_DISABLED`` and ``OTEL_<SIGNAL>_EXPORTER`` as the OTel SDK reads them."""
    if keyword is not None:
        return keyword
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    names = [name.strip().lower() for name in os.environ.get(variable, "").split(",") if name.strip()]
    if not names or "otlp" in names:
        return True
    if names != ["none"]:
        logger.warning(
            "runtel: %s=%s names no otlp exporter: the otlp exporter sends no %s",
            variable,
            os.environ[variable],
            signal,
        )
    return False


def _protocol(signal: Signal, keyword: str | None) -> OtlpProtocol:
    """The keyword, else ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``."""
    source, value = "protocol", keyword
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value is None and os.environ.get(variable):
            source, value = variable, os.environ[variable].strip()
    chosen = value or "http/protobuf"
    for known in _PROTOCOLS:
        if chosen == known:
            return known
    raise ConfigError(f"{source}={chosen!r} is not supported; use one of {', '.join(_PROTOCOLS)}")


def _make_exporter(signal: Signal, protocol: OtlpProtocol, options: Mapping[str, Any]) -> Any:
    """The official OTLP exporter of ``signal`` over ``protocol``; a missing package names the extra."""
    package = "http" if protocol == "http/protobuf" else "grpc"
    module = (
        f"opentelemetry.exporter.otlp.proto.{package}.{'trace' if signal == 'traces' else 'metric'}_exporter"
    )
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"the otlp exporter needs opentelemetry-exporter-otlp-proto-{package} for {protocol}: "
            "pip install runtel[otlp]"
        ) from exc
    factory = loaded.OTLPSpanExporter if signal == "traces" else loaded.OTLPMetricExporter
    kwargs: dict[str, Any] = {"headers": options["headers"], "timeout": options["timeout"]}
    endpoint = options["endpoint"]
    if protocol == "grpc":
        kwargs.update(endpoint=endpoint, insecure=options["insecure"])
    elif endpoint is not None:
        kwargs["endpoint"] = f"{endpoint.rstrip('/')}/v1/{signal}"
    return factory(**kwargs)
