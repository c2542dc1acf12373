"""Exporter health as live telemetry: instruments a Prometheus scrape sees, and a live file `show` reads."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

import runtel
from runtel.cli import main
from runtel.exporters.mlflow import MlflowExporter
from runtel.exporters.prometheus import PrometheusExporter
from runtel.exporters.tensorboard import TensorBoardExporter
from tests.ports import closed_port


def scrape(url: str) -> dict[tuple[str, str], float]:
    """``{(metric, exporter): value}`` of the ``runtel_exporter_*`` lines of a Prometheus scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for match in re.finditer(
        r'^(runtel_exporter_\w+)\{[^}]*runtel_exporter_name="([^"]+)"[^}]*\} (\S+)$', text, re.M
    ):
        found[(match.group(1), match.group(2))] = float(match.group(3))
    return found


def test_prometheus_sees_each_exporters_health_while_the_run_is_live(
    base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    prometheus = PrometheusExporter(port=0)
    dead = MlflowExporter(tracking_uri=f"http://127.0.0.1:{closed_port()}")
    tensorboard = TensorBoardExporter(log_dir=str(tmp_path / "tb"))
    run = runtel.init(
        project="health", base_dir=str(base_dir), exporters=[prometheus, tensorboard, dead], export_retries=1
    )
    try:
        for step in range(100):
            run.log({"loss": 1.0 / (step + 1), "acc": step / 100})
        run.flush(timeout=30, exporters=True)
        health = scrape(prometheus.url)
    finally:
        run.finish()
    assert health[("runtel_exporter_points_delivered_total", "tensorboard")] == 200
    assert health[("runtel_exporter_points_undelivered_total", "tensorboard")] == 0
    assert health[("runtel_exporter_failed", "tensorboard")] == 0
    assert health[("runtel_exporter_queue_size", "tensorboard")] == 0
    assert health[("runtel_exporter_failed", "mlflow")] == 1
    assert health[("runtel_exporter_retries_total", "mlflow")] == 1
    assert health[("runtel_exporter_points_undelivered_total", "mlflow")] == 200


def test_show_reads_a_live_runs_exporter_health(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensorboard = TensorBoardExporter(log_dir=str(tmp_path / "tb"))
    run = runtel.init(
        project="health",
        base_dir=str(base_dir),
        exporters=[tensorboard],
        heartbeat_interval=0.1,
        flush_interval=0.05,
    )
    try:
        run.log({"loss": 1.0})
        run.flush(timeout=10, exporters=True)
        deadline = time.monotonic() + 10
        live: dict = {}
        while time.monotonic() < deadline:
            assert main(["show", run.id, "--json", "--base-dir", str(base_dir)]) == 0
            live = json.loads(capsys.readouterr().out)["exporters_live"]
            if live.get("tensorboard", {}).get("points_delivered") == 1:
                break
            time.sleep(0.1)
        assert live["tensorboard"] == {
            "status": "ok",
            "queue_depth": 0,
            "points_delivered": 1,
            "points_undelivered": 0,
            "retries": 0,
            "failed": 0,
        }
        assert main(["show", run.id, "--base-dir", str(base_dir)]) == 0
        assert "exporters (live, last heartbeat)" in capsys.readouterr().out
    finally:
        run.finish()


def test_a_damaged_live_file_is_ignored(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = runtel.init(project="health", base_dir=str(base_dir))
    (run.dir / "exporters.live.json").write_text('{"exporters": {"x": {"status": "ok", "retries": -1}}}')
    try:
        assert main(["show", run.id, "--json", "--base-dir", str(base_dir)]) == 0
        assert json.loads(capsys.readouterr().out)["exporters_live"] == {}
    finally:
        run.finish()
