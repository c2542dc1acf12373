"""Serves a run's latest metric values on a Prometheus ``/metrics`` endpoint, for live dashboards and alerts.

Every logged series and every ``system/...`` series is mirrored by the run as an OpenTelemetry gauge
on its own ``MeterProvider``; OpenTelemetry's ``PrometheusMetricReader`` turns those gauges (and the
user's ``run.meter`` instruments) into the Prometheus text format each time the endpoint is scraped.
Names and labels follow OpenTelemetry's Prometheus mapping: ``train/loss`` becomes ``train_loss``,
``system/cpu.utilization`` becomes ``system_cpu_utilization``, and each sample carries the labels
``runtel_metric`` (the original name), ``runtel_run_id``, ``runtel_run_name``, ``runtel_project`` and
``otel_scope_name``. Each exporter has its own ``CollectorRegistry`` and port, so two runs in one
process never share or clash.

``OTEL_EXPORTER_PROMETHEUS_HOST`` and ``OTEL_EXPORTER_PROMETHEUS_PORT`` (OpenTelemetry's variables)
give the defaults; keywords win.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtel._distributed import detect_job
from runtel._net import is_loopback
from runtel.errors import ConfigError, MissingExtraError
from runtel.exporters.base import Capabilities, ExportResult
from runtel.records import Record

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor
    from prometheus_client import CollectorRegistry

logger = logging.getLogger("runtel")

#: OpenTelemetry's default port for a Prometheus exporter.
DEFAULT_PORT = 9464

CAPABILITIES = Capabilities(
    # Each run metric's latest value at each scrape, through the run's OpenTelemetry gauges: the
    # dispatcher gives it no records and nothing is adapted for it.
    records=False,
    every_rank=True,
)


class PrometheusExporter:
    """A ``/metrics`` endpoint for one run, on ``host:port`` from construction until ``shutdown()``.

    ``host`` defaults to ``127.0.0.1``; any other address is served only when asked and logged as a
    warning, since the endpoint has no authentication. ``port=0`` takes a free port: read it from
    :attr:`port` or :attr:`url`. A port already in use raises :class:`~runtel.errors.ConfigError`.
    In a distributed job every rank serves its own endpoint: local rank *n* listens on ``port + n``.
    """

    name = "prometheus"
    capabilities = CAPABILITIES

    def __init__(self, port: int | None = None, host: str | None = None) -> None:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: F401
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as exc:
            raise MissingExtraError(
                "the prometheus exporter needs opentelemetry-exporter-prometheus and prometheus-client: "
                "pip install runtel[prometheus]"
            ) from exc
        host = host or os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "127.0.0.1"
        port = _port(port)
        if port:  # ranks of one job on one node would ask for the same port: rank n takes port + n
            port += detect_job(os.environ).local_rank
        if not is_loopback(host):
            logger.warning(
                "runtel: the prometheus exporter serves /metrics on %s, reachable from other machines "
                "and without authentication",
                host,
            )
        self._registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        try:
            server, thread = start_http_server(port, addr=host, registry=self._registry)
        except OSError as exc:
            raise ConfigError(
                f"the prometheus exporter cannot listen on {host}:{port} ({exc}); "
                "pass another port, or port=0 for a free one"
            ) from exc
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self._host = host
        self._readers: list[MetricReader] | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The port actually listened on (the chosen one when ``port=0``)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The scrape URL, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    # ------------------------------------------------------------------ TelemetryHooks
    def span_processors(self) -> Sequence[SpanProcessor]:
        """Prometheus holds no traces."""
        return ()

    def metric_readers(self) -> Sequence[MetricReader]:
        """One ``PrometheusMetricReader`` on this exporter's registry (collects at each scrape)."""
        if self._readers is None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            self._readers = [PrometheusMetricReader(registry=self._registry)]
        return self._readers

    # ------------------------------------------------------------------ Exporter
    def export(self, records: Sequence[Record]) -> ExportResult:
        """Metrics reach the endpoint through the run's gauges; records need nothing more."""
        if self._readers is None:
            logger.error(
                "runtel: the prometheus exporter serves a live run's metrics; it cannot replay a stored run"
            )
            return ExportResult.FAILURE
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing is buffered: every scrape collects the current values."""
        return True

    def shutdown(self) -> None:
        """Stop serving ``/metrics`` and release the port. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _port(keyword: int | None) -> int:
    """The keyword, else ``OTEL_EXPORTER_PROMETHEUS_PORT``, else 9464; checked to be a port."""
    source, value = "port", keyword
    if keyword is None:
        source, env = "OTEL_EXPORTER_PROMETHEUS_PORT", os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT")
        if env is None:
            return DEFAULT_PORT
        value = int(env) if env.strip().isdigit() else -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        shown = os.environ.get(source) if keyword is None else keyword
        raise ConfigError(f"{source}={shown!r} is not a port; use 0-65535 (0 picks a free port)")
    return value
