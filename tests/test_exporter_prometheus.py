"""The Prometheus exporter, scraped by a real Prometheus server (Debian's) and read back by urllib."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.errors import ConfigError
from runtel.exporters.prometheus import PrometheusExporter

PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def exporter() -> Iterator[PrometheusExporter]:
    created = PrometheusExporter(port=0)
    yield created
    created.shutdown()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Starts Prometheus scraping 127.0.0.1:<port> every second; gives its base URL."""
    assert PROMETHEUS is not None, (
        "needs Debian's prometheus server: apt-get install prometheus (bash .ci/test does)"
    )
    started: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: runtel\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        assert process.wait(timeout=10) == 0


def _query(base: str, promql: str, deadline: float) -> list[dict[str, Any]]:
    """Polls ``/api/v1/query`` until the query returns samples or the deadline passes."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    while time.monotonic() < deadline:
        try:
            result: list[dict[str, Any]] = json.loads(_get(url))["data"]["result"]
        except (urllib.error.URLError, ConnectionError):
            result = []
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus returned nothing for {promql} within the deadline")


def test_prometheus_scrapes_logged_and_system_metrics_with_run_labels(
    base_dir: Path, exporter: PrometheusExporter, prometheus: Callable[[int], str]
) -> None:
    server = prometheus(exporter.port)
    with runtel.init(
        project="promtest", name="scraped", base_dir=str(base_dir), exporters=[exporter], system_interval=0.5
    ) as run:
        run.meter.create_counter("samples").add(64)
        run.log({"train/loss": 0.75, "val/acc": 0.5})
        run.log({"train/loss": 0.25})
        deadline = time.monotonic() + 20
        loss = _query(server, f'train_loss{{runtel_run_id="{run.id}"}}', deadline)
        cpu = _query(server, f'system_cpu_utilization{{runtel_run_id="{run.id}"}}', deadline)
        samples = _query(server, 'samples_total{otel_scope_name="runtel.user"}', deadline)
        assert _query(server, f'up{{instance="127.0.0.1:{exporter.port}"}}', deadline)[0]["value"][1] == "1"

    assert float(loss[0]["value"][1]) == 0.25
    assert loss[0]["metric"] == {
        "__name__": "train_loss",
        "instance": f"127.0.0.1:{exporter.port}",
        "job": "runtel",
        "otel_scope_name": "runtel.metrics",
        "runtel_metric": "train/loss",
        "runtel_project": "promtest",
        "runtel_run_id": run.id,
        "runtel_run_name": "scraped",
    }
    assert cpu[0]["metric"]["runtel_metric"] == "system/cpu.utilization"
    assert 0.0 <= float(cpu[0]["value"][1]) <= 100.0
    assert float(samples[0]["value"][1]) == 64.0


def test_metrics_endpoint_serves_latest_values_in_text_format(
    base_dir: Path, exporter: PrometheusExporter
) -> None:
    with runtel.init(project="promtest", name="direct", base_dir=str(base_dir), exporters=[exporter]) as run:
        requests = run.meter.create_counter("requests")
        run.log({"train/loss": 2.0, "lr": 0.1})
        run.log({"train/loss": 1.5})
        requests.add(3)
        run.flush()
        text = _get(exporter.url)

    labels = (
        f'otel_scope_name="runtel.metrics",otel_scope_schema_url="",otel_scope_version="",'
        f'runtel_metric="train/loss",runtel_project="promtest",runtel_run_id="{run.id}",'
        f'runtel_run_name="direct"'
    )
    assert "# TYPE train_loss gauge" in text
    assert f"train_loss{{{labels}}} 1.5" in text
    assert f"lr{{{labels.replace('train/loss', 'lr')}}} 0.1" in text
    assert 'requests_total{otel_scope_name="runtel.user",' in text
    target_info = next(line for line in text.splitlines() if line.startswith("target_info{"))
    assert 'service_name="promtest"' in target_info
    assert f'runtel_run_id="{run.id}"' in target_info


def test_two_exporters_in_one_process_expose_only_their_own_run(base_dir: Path) -> None:
    first, second = PrometheusExporter(port=0), PrometheusExporter(port=0)
    try:
        with (
            runtel.init(project="a", base_dir=str(base_dir), exporters=[first]) as run_a,
            runtel.init(project="b", base_dir=str(base_dir), exporters=[second]) as run_b,
        ):
            run_a.log({"loss": 1.0})
            run_b.log({"loss": 2.0})
            run_a.flush()
            run_b.flush()
            text_a, text_b = _get(first.url), _get(second.url)
    finally:
        first.shutdown()
        second.shutdown()
    assert run_a.id in text_a and run_b.id not in text_a
    assert run_b.id in text_b and run_a.id not in text_b


def test_shutdown_releases_the_port(exporter: PrometheusExporter) -> None:
    port = exporter.port
    exporter.shutdown()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_a_busy_port_is_a_config_error(exporter: PrometheusExporter) -> None:
    with pytest.raises(ConfigError, match=f"127.0.0.1:{exporter.port}"):
        PrometheusExporter(port=exporter.port)


def test_another_host_is_served_only_when_asked_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="runtel"):
        local = PrometheusExporter(port=0)
        wide = PrometheusExporter(port=0, host="0.0.0.0")
    try:
        assert local.url.startswith("http://127.0.0.1:")
        assert [r.getMessage() for r in caplog.records] == [
            "runtel: the prometheus exporter serves /metrics on 0.0.0.0, reachable from other machines "
            "and without authentication"
        ]
    finally:
        local.shutdown()
        wide.shutdown()


def test_a_bad_port_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "http")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_PROMETHEUS_PORT='http' is not a port"):
        PrometheusExporter()
