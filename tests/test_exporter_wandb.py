"""The W&B exporter against real wandb in offline mode, read back from its transaction log."""

from __future__ import annotations

import base64
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wandb

from runtel.errors import MissingExtraError, RuntelError
from runtel.exporters.base import EPOCH_SERIES, Exporter, ExportResult
from runtel.exporters.wandb import CAPABILITIES, AlreadyExportedError, WandbExporter
from runtel.records import (
    MetricPoints,
    Record,
    RunEnded,
    RunStarted,
)
from tests.readers.wandb_log import WandbLog, read_finished_log
from tests.streams import METRICS, STEPS, training_stream

RUN_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
API_KEY = "local-" + "k3y" * 20


def export_offline(tmp_path: Path, records: list[Record], batch: int = 3) -> WandbLog:
    exporter = WandbExporter(mode="offline", dir=str(tmp_path), api_key=API_KEY)
    for lo in range(0, len(records), batch):
        assert exporter.export(records[lo : lo + batch]) is ExportResult.SUCCESS
    assert exporter.force_flush()
    exporter.shutdown()
    return read_finished_log(tmp_path, RUN_ID)


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record], WandbLog]:
    tmp_path = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        records = training_stream(tmp_path, RUN_ID, artifact_version=1)
        return tmp_path, records, export_offline(tmp_path, records)


def same(a: Any, b: float) -> bool:
    return (isinstance(a, float) and math.isnan(a) and math.isnan(b)) or a == b


def test_exporter_satisfies_protocol() -> None:
    exporter = WandbExporter(mode="offline")
    assert isinstance(exporter, Exporter)
    assert exporter.name == "wandb"
    assert exporter.capabilities is CAPABILITIES


def test_every_metric_point_is_a_history_value_at_its_step(
    exported: tuple[Path, list[Record], WandbLog],
) -> None:
    _, records, log = exported
    for batch in (r for r in records if isinstance(r, MetricPoints)):
        for i in range(len(batch)):
            row = log.history[int(batch.steps[i])]
            assert same(row[METRICS[batch.index[i]]], float(batch.values[i]))
    assert sorted(log.history) == list(range(STEPS))


def test_history_row_time_is_the_latest_time_logged_at_its_step(
    exported: tuple[Path, list[Record], WandbLog],
) -> None:
    _, _, log = exported
    t0 = 1_700_000_000.0
    for step in (0, 1, 1234):
        assert log.history[step]["_timestamp"] == t0 + step * 0.125 + 0.002
    assert log.history[STEPS // 2 - 1]["_timestamp"] == t0 + STEPS // 2 * 0.125  # the epoch's end


def test_nan_points_survive(exported: tuple[Path, list[Record], WandbLog]) -> None:
    _, _, log = exported
    assert all(math.isnan(log.history[s]["train/loss"]) for s in range(0, STEPS, 97))


def test_epoch_spans_become_a_step_indexed_epoch_series(
    exported: tuple[Path, list[Record], WandbLog],
) -> None:
    _, _, log = exported
    epochs = {step: row[EPOCH_SERIES] for step, row in log.history.items() if EPOCH_SERIES in row}
    assert epochs == {STEPS // 2 - 1: 0, STEPS - 1: 1}


def test_config_holds_nested_config_and_merged_params(exported: tuple[Path, list[Record], WandbLog]) -> None:
    _, _, log = exported
    assert log.config["model"] == {"depth": 18, "width": 64}
    assert log.config["seed"] == 7
    assert log.config["optimizer"] == {"name": "adam", "lr": 1e-4, "betas": [0.9, 0.999]}


def test_run_identity_and_tags(exported: tuple[Path, list[Record], WandbLog]) -> None:
    _, _, log = exported
    assert log.run is not None
    assert log.run.run_id == RUN_ID
    assert log.run.display_name == "resnet-baseline"
    assert log.run.project == "runtel-tests"
    assert list(log.run.tags) == ["baseline", "cifar"]


def test_summary_status_and_exit_code(exported: tuple[Path, list[Record], WandbLog]) -> None:
    _, _, log = exported
    assert log.summary["best_acc"] == 0.93
    assert log.summary["runtel/status"] == "failed"
    assert log.summary["runtel/error"] == "ValueError: boom"
    assert log.exit_code == 1


def test_histogram_is_logged_at_its_step(exported: tuple[Path, list[Record], WandbLog]) -> None:
    _, _, log = exported
    row = log.history[STEPS - 1]  # wandb-core stores a histogram as nested keys under its name
    assert row["weights/conv1/_type"] == "histogram"
    assert row["weights/conv1/values"] == [1, 4, 9, 16, 16, 9, 4, 1]
    assert row["weights/conv1/bins"] == np.linspace(-1.0, 1.0, 9).tolist()


def test_model_artifact_is_logged_with_its_file(exported: tuple[Path, list[Record], WandbLog]) -> None:
    _, _, log = exported
    (artifact,) = log.artifacts
    assert (artifact.name, artifact.type) == ("checkpoint", "model")
    assert [entry.path for entry in artifact.manifest.contents] == ["weights.bin"]
    assert set(artifact.aliases) >= {"latest", "runtel-v1"}


def test_online_api_key_reaches_the_server_and_is_written_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online, against a W&B server on loopback that refuses the key: the key goes out in the
    Authorization header, and no file wandb wrote (run folder, debug logs, home) holds it."""
    seen: list[str] = []

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads the headers, not the access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WANDB_MODE")
    settings = wandb.Settings(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    exporter = WandbExporter(
        mode="online", dir=str(tmp_path / "wandb-dir"), api_key=API_KEY, settings=settings
    )
    started = RunStarted(run_id="0nl1ne" + "0" * 26, name="r", project="p", start_time=0.0, config={})
    try:
        with pytest.raises(Exception, match="401"):
            exporter.export([started])
    finally:
        server.shutdown()
        server.server_close()
    assert "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode() in seen
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "debug-internal.log" for p in written)  # wandb did write its files
    assert [p for p in written if API_KEY.encode() in p.read_bytes()] == []


def test_second_offline_export_of_a_run_is_refused(exported: tuple[Path, list[Record], WandbLog]) -> None:
    tmp_path, records, _ = exported
    exporter = WandbExporter(mode="offline", dir=str(tmp_path))
    with pytest.raises(AlreadyExportedError, match=RUN_ID):
        exporter.export(records[:1])


def test_forced_offline_export_replaces_the_earlier_one(
    exported: tuple[Path, list[Record], WandbLog], tmp_path: Path
) -> None:
    _, records, first = exported
    export_offline(tmp_path, records)
    forced = WandbExporter(mode="offline", dir=str(tmp_path), force=True)
    for lo in range(0, len(records), 3):
        assert forced.export(records[lo : lo + 3]) is ExportResult.SUCCESS
    forced.shutdown()
    again = read_finished_log(tmp_path, RUN_ID)  # exactly one folder of the run is left
    assert sorted(again.history) == sorted(first.history) and again.exit_code == first.exit_code
    for step, row in first.history.items():
        metrics = {key for key in row if not key.startswith("_")}
        assert metrics == {key for key in again.history[step] if not key.startswith("_")}
        assert all(same(again.history[step][key], row[key]) for key in metrics)


def test_force_cannot_replace_an_online_run() -> None:
    exporter = WandbExporter(mode="online", force=True)
    with pytest.raises(RuntelError, match="delete it in W&B"):
        exporter.export([RunStarted(run_id=RUN_ID, name="r", project="p", start_time=0.0, config={})])


def test_two_runs_in_one_process_do_not_clash(tmp_path: Path) -> None:
    first, second = (
        WandbExporter(mode="offline", dir=str(tmp_path)),
        WandbExporter(mode="offline", dir=str(tmp_path)),
    )
    ids = ["a" * 32, "b" * 32]
    for exporter, run_id in zip((first, second), ids, strict=True):
        exporter.export([RunStarted(run_id=run_id, name=run_id[:4], project="p", start_time=0.0, config={})])
    for exporter, run_id in zip((first, second), ids, strict=True):
        points = MetricPoints(
            names=("x",),
            index=np.zeros(1, dtype=np.int32),
            steps=np.array([3], dtype=np.int64),
            times=np.array([1.0]),
            values=np.array([float(int(run_id[0], 16))]),
            span_ids=np.zeros(1, dtype=np.uint64),
        )
        exporter.export([points, RunEnded(status="completed", end_time=2.0)])
    for run_id in ids:
        log = read_finished_log(tmp_path, run_id)
        assert log.history[3]["x"] == int(run_id[0], 16)
        assert log.exit_code == 0


def test_module_import_leaves_wandb_unimported() -> None:
    code = "import sys, runtel.exporters.wandb; sys.exit('wandb' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_wandb_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MissingExtraError, match=r"pip install runtel\[wandb\]"):
        WandbExporter()
