"""The OTLP exporter, received by real OTLP servers on loopback: HTTP/protobuf and gRPC."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from mlflow.tracking import MlflowClient
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

import runtel
from runtel.errors import ConfigError
from runtel.exporters.base import ExportResult
from runtel.exporters.otlp import OtlpExporter
from tests import launch
from tests.conftest import run_python
from tests.ports import closed_port


@dataclass
class Received:
    """What an OTLP server received: parsed requests, and the headers of each."""

    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    logs: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Any, headers: dict[str, str]) -> None:
        with self.lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self.traces.append(request)
            elif isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
                self.logs.append(request)
            else:
                self.metrics.append(request)
            self.headers.append(headers)


@dataclass
class Server:
    endpoint: str
    received: Received


@pytest.fixture
def http_receiver() -> Iterator[Server]:
    """OTLP/HTTP: POST /v1/traces, /v1/metrics and /v1/logs, protobuf bodies, gzip or not."""
    received = Received()
    messages = {
        "/v1/traces": (
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
        ),
        "/v1/metrics": (
            metrics_service_pb2.ExportMetricsServiceRequest,
            metrics_service_pb2.ExportMetricsServiceResponse,
        ),
        "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path not in messages:
                self.send_error(404)
                return
            request_type, response_type = messages[self.path]
            received.add(request_type.FromString(body), {k.lower(): v for k, v in self.headers.items()})
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what was received, not the access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{server.server_address[1]}", received)
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def grpc_receiver() -> Iterator[Server]:
    """OTLP/gRPC: the TraceService and MetricsService from opentelemetry-proto's stubs."""
    received = Received()

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
            received.add(request, dict(context.invocation_metadata()))
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> metrics_service_pb2.ExportMetricsServiceResponse:
            received.add(request, dict(context.invocation_metadata()))
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield Server(f"http://127.0.0.1:{port}", received)
    server.stop(grace=None)


def _train(run: runtel.Run) -> None:
    """Two epochs with a validate phase, as a user script would log them."""
    seen = run.meter.create_counter("samples_seen")
    for epoch in run.epochs(2):
        for batch in range(3):
            run.log({"train/loss": 1.0 / (1 + epoch * 3 + batch), "lr": 0.1})
            seen.add(32)
        with run.span("validate"):
            run.log({"val/acc": 0.5 + epoch / 4})


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value"))


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _spans(received: Received) -> tuple[dict[str, Any], list[Any]]:
    resources: dict[str, Any] = {}
    spans = []
    for request in received.traces:
        for resource_spans in request.resource_spans:
            resources.update(_attributes(resource_spans.resource.attributes))
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    return resources, spans


def _last_points(received: Received) -> dict[tuple[str, str], tuple[str, Any]]:
    """(scope, series) -> (metric kind, latest data point) over every metrics request received."""
    points: dict[tuple[str, str], tuple[str, Any]] = {}
    for request in received.metrics:
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        series = _attributes(point.attributes).get("runtel.metric", metric.name)
                        points[(scope_metrics.scope.name, series)] = (kind, point)
    return points


def _check_trace_and_metrics(run: runtel.Run, received: Received) -> None:
    resource, spans = _spans(received)
    assert resource["service.name"] == "otlptest"
    assert resource["runtel.run.id"] == run.id
    assert {span.trace_id.hex() for span in spans} == {run.id}
    by_name = {span.name: span for span in spans}
    root = by_name[f"run {run.name}"]
    assert root.parent_span_id == b""
    epochs = [span for span in spans if span.name.startswith("epoch ")]
    assert sorted(_attributes(span.attributes)["epoch"] for span in epochs) == [0, 1]
    assert {span.parent_span_id for span in epochs} == {root.span_id}
    validates = [span for span in spans if span.name == "validate"]
    assert sorted(span.parent_span_id for span in validates) == sorted(span.span_id for span in epochs)

    points = _last_points(received)
    assert points[("runtel.metrics", "train/loss")][1].as_double == 1.0 / 6
    assert points[("runtel.metrics", "lr")][1].as_double == 0.1
    assert points[("runtel.metrics", "val/acc")][1].as_double == 0.75
    assert _attributes(points[("runtel.metrics", "val/acc")][1].attributes) == {
        "runtel.metric": "val/acc",
        "runtel.run.id": run.id,
        "runtel.run.name": run.name,
        "runtel.project": "otlptest",
    }
    kind, counter = points[("runtel.user", "samples_seen")]
    assert (kind, counter.as_int) == ("sum", 6 * 32)


def test_http_delivers_run_trace_and_last_metric_values(base_dir: Path, http_receiver: Server) -> None:
    exporter = OtlpExporter(http_receiver.endpoint)
    with runtel.init(project="otlptest", name="http", base_dir=str(base_dir), exporters=[exporter]) as run:
        _train(run)
    _check_trace_and_metrics(run, http_receiver.received)


def test_grpc_delivers_run_trace_and_last_metric_values(base_dir: Path, grpc_receiver: Server) -> None:
    exporter = OtlpExporter(grpc_receiver.endpoint, protocol="grpc")
    with runtel.init(project="otlptest", name="grpc", base_dir=str(base_dir), exporters=[exporter]) as run:
        _train(run)
    _check_trace_and_metrics(run, grpc_receiver.received)


def test_otel_environment_variables_choose_protocol_endpoint_and_headers(
    base_dir: Path, grpc_receiver: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=vision")
    with runtel.init(
        project="otlptest", name="env", base_dir=str(base_dir), exporters=[OtlpExporter()]
    ) as run:
        _train(run)
    _check_trace_and_metrics(run, grpc_receiver.received)
    assert {headers["x-team"] for headers in grpc_receiver.received.headers} == {"vision"}


def test_metrics_are_exported_while_the_run_is_live(base_dir: Path, http_receiver: Server) -> None:
    exporter = OtlpExporter(http_receiver.endpoint, export_interval=0.2, headers={"x-team": "nlp"})
    with runtel.init(project="otlptest", name="live", base_dir=str(base_dir), exporters=[exporter]) as run:
        run.log({"train/loss": 3.0})
        run.flush()
        assert exporter.force_flush(5_000)
        live = _last_points(http_receiver.received)
        assert live[("runtel.metrics", "train/loss")][1].as_double == 3.0
    assert {headers["x-team"] for headers in http_receiver.received.headers} == {"nlp"}


def test_system_metrics_reach_the_collector_as_gauges_of_the_run(
    base_dir: Path, http_receiver: Server
) -> None:
    exporter = OtlpExporter(http_receiver.endpoint)
    with runtel.init(
        project="otlptest", name="sys", base_dir=str(base_dir), exporters=[exporter], system_interval=0.2
    ) as run:
        run.log({"train/loss": 1.0})
        run.sample_system()
    points = _last_points(http_receiver.received)
    cpu = points[("runtel.metrics", "system/cpu.utilization")][1].as_double
    memory = points[("runtel.metrics", "system/memory.used")][1].as_double
    assert 0 <= cpu <= 100 and memory > 0
    assert (
        _attributes(points[("runtel.metrics", "system/memory.used")][1].attributes)["runtel.run.id"] == run.id
    )


def test_traces_only_sends_no_metrics(base_dir: Path, http_receiver: Server) -> None:
    exporter = OtlpExporter(http_receiver.endpoint, metrics=False)
    with runtel.init(project="otlptest", base_dir=str(base_dir), exporters=[exporter]) as run:
        _train(run)
    assert _spans(http_receiver.received)[1]
    assert http_receiver.received.metrics == []


def test_unsupported_protocol_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL='http/json'"):
        OtlpExporter()


def test_replaying_a_stored_run_is_refused() -> None:
    assert OtlpExporter(f"http://127.0.0.1:{closed_port()}").export([]) is ExportResult.FAILURE


def test_module_import_does_not_load_the_otlp_packages(tmp_path: Path) -> None:
    loaded = run_python(
        "import sys, runtel.exporters.otlp, runtel.exporters.prometheus\n"
        "optional = ('opentelemetry.exporter', 'grpc', 'prometheus')\n"
        "print(sorted(m for m in sys.modules if m.startswith(optional)))",
        tmp_path,
    )
    assert loaded.strip() == "[]"


def test_a_missing_package_names_the_extra(tmp_path: Path) -> None:
    message = run_python(
        "import sys\n"
        "sys.modules['opentelemetry.exporter.otlp.proto.http.trace_exporter'] = None\n"
        "from runtel.errors import MissingExtraError\n"
        "from runtel.exporters.otlp import OtlpExporter\n"
        "try:\n    OtlpExporter()\nexcept MissingExtraError as exc:\n    print(exc)\n",
        tmp_path,
    )
    assert message.strip() == (
        "the otlp exporter needs opentelemetry-exporter-otlp-proto-http for http/protobuf: "
        "pip install runtel[otlp]"
    )


RANKS_SCRIPT = """
import sys, runtel
endpoint, base_dir, db = sys.argv[1:4]
run = runtel.init(
    project="ddp", name="ddp-otlp", base_dir=base_dir, system_interval=0,
    exporters=["otlp", "mlflow"],
    exporter_options={"otlp": {"endpoint": endpoint}, "mlflow": {"tracking_uri": f"sqlite:///{db}"}},
)
for epoch in run.epochs(2):
    run.log({"loss": 1.0 / (epoch + 1)}, all_ranks=True)
run.finish()
"""


@pytest.mark.slow  # 24 s measured: two torchrun ranks
def test_every_rank_sends_its_spans_into_the_one_trace_and_mlflow_gets_one_run(
    tmp_path: Path, http_receiver: Server
) -> None:
    """OTLP carries each process's telemetry, so every rank keeps it; record backends get rank 0's run."""
    script = tmp_path / "train.py"
    script.write_text(RANKS_SCRIPT)
    db = tmp_path / "mlflow.db"
    result = launch.torchrun(script, http_receiver.endpoint, str(tmp_path / "runs"), str(db))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runtel.Store(tmp_path / "runs").runs()
    spans = [
        (span, _attributes(span.attributes))
        for request in http_receiver.received.traces
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert {span.trace_id.hex() for span, _ in spans} == {run.id}
    epochs = sorted(
        (attributes["runtel.rank"], span.name) for span, attributes in spans if span.name.startswith("epoch")
    )
    assert epochs == [(0, "epoch 0"), (0, "epoch 1"), (1, "epoch 0"), (1, "epoch 1")]
    assert {span.name for span, _ in spans} >= {"run ddp-otlp", "rank 1"}
    client = MlflowClient(f"sqlite:///{db}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert mlrun.data.tags["runtel.run_id"] == run.id


@pytest.mark.parametrize("variable", ["OTEL_METRICS_EXPORTER", "OTEL_TRACES_EXPORTER"])
def test_otel_signal_exporter_none_turns_that_signal_off(
    base_dir: Path, http_receiver: Server, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.endpoint)
    with runtel.init(project="otlptest", base_dir=str(base_dir), exporters=[OtlpExporter()]) as run:
        _train(run)
    received = http_receiver.received
    if variable == "OTEL_METRICS_EXPORTER":
        assert received.metrics == [] and _spans(received)[1]
    else:
        assert received.traces == [] and _last_points(received)


def test_a_keyword_wins_over_the_signal_variable(
    base_dir: Path, http_receiver: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")  # no otlp in the list: off
    exporter = OtlpExporter(http_receiver.endpoint, metrics=True)
    with runtel.init(project="otlptest", base_dir=str(base_dir), exporters=[exporter]) as run:
        _train(run)
    assert http_receiver.received.traces == [] and _last_points(http_receiver.received)


def test_per_signal_endpoint_variables_are_used_as_given(
    base_dir: Path, http_receiver: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}"
    )  # per-signal ones win
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{http_receiver.endpoint}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"{http_receiver.endpoint}/v1/metrics")
    with runtel.init(
        project="otlptest", name="env", base_dir=str(base_dir), exporters=[OtlpExporter()]
    ) as run:
        _train(run)
    _check_trace_and_metrics(run, http_receiver.received)


def test_otel_sdk_disabled_sends_nothing(
    base_dir: Path, http_receiver: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with runtel.init(
        project="otlptest", base_dir=str(base_dir), exporters=[OtlpExporter(http_receiver.endpoint)]
    ) as run:
        _train(run)
    assert http_receiver.received.traces == [] and http_receiver.received.metrics == []
