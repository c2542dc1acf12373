"""The MLflow exporter against a real SQLite tracking store, read back with ``MlflowClient``."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from runtel._adapt import Adapter
from runtel.errors import MissingExtraError, RuntelError
from runtel.exporters.base import EPOCH_SERIES, Exporter, ExportResult
from runtel.exporters.mlflow import MlflowExporter
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEnded,
    RunStarted,
    SpanEnded,
)
from tests.files import write_png

T0 = 1_700_000_000.0


@dataclass
class Stream:
    records: list[Record]
    points: MetricPoints
    artifact: Path


def make_stream(tmp: Path, run_id: str = "0af7651916cd43dd8448eb211c80319c", epochs: int = 3) -> Stream:
    """One run as the SDK would send it: 3 metrics over 2,000 steps (4,000 points, one NaN)."""
    rng = np.random.default_rng(7)
    n = 2000
    steps = np.repeat(np.arange(n, dtype=np.int64), 2)
    index = np.tile(np.array([0, 1], dtype=np.int32), n)
    index[1::4] = 2  # every other step, the second point is "lr" instead of "acc"
    times = T0 + steps * 0.0137 + rng.random(2 * n) * 1e-3
    values = rng.standard_normal(2 * n) * 10.0 ** rng.integers(-8, 8, 2 * n)
    values[10] = np.nan
    points = MetricPoints(
        names=("loss", "acc", "lr"),
        index=index,
        steps=steps,
        times=times,
        values=values,
        span_ids=np.zeros(2 * n, dtype=np.uint64),
    )
    artifact = tmp / "weights.bin"
    artifact.write_bytes(rng.bytes(4096))
    spans = [
        SpanEnded(
            name=f"epoch {e}",
            kind="epoch",
            trace_id=run_id,
            span_id=f"{e + 1:016x}",
            parent_span_id=None,
            start_time=T0 + e,
            end_time=T0 + e + 0.5,
            attributes={"epoch": e, "runtel.step_end": (e + 1) * n // epochs},
        )
        for e in range(epochs)
    ]
    records: list[Record] = [
        RunStarted(run_id, "baseline", "vision", T0, {"seed": 7}, tags=("smoke",)),
        ParamsLogged({"lr": 0.001, "model": {"depth": 4, "act": "gelu"}, "layers": [1, 2]}, T0 + 0.1),
        points,
        *spans,
        ArtifactLogged("weights", 1, "ab" * 32, 4096, str(artifact), T0 + 30, 1999),
        ArtifactLogged("ckpt", 2, "cd" * 32, 4096, str(artifact), T0 + 31, None, kind="model"),
        FigureLogged("curves/loss", str(write_png(tmp / "loss.png")), 1999, T0 + 32),
        HistogramLogged(
            "weights/l1",
            step=1999,
            time=T0 + 33,
            bin_edges=np.array([-1.5, -0.25, 0.0, 0.125, 2.0]),
            counts=np.array([3, 10, 7, 1], dtype=np.int64),
            min=-1.5,
            max=2.0,
            mean=-0.1,
            std=0.7,
            count=21,
        ),
        RunEnded("completed", T0 + 40, summary={"loss": 0.25}),
    ]
    return Stream(records, points, artifact)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One SQLite store for the module (creating its schema costs seconds) and an artifact root."""
    tmp = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "artifacts")


def _exporter(tracking: tuple[str, str], experiment: str, **kwargs: bool) -> MlflowExporter:
    uri, artifacts = tracking
    return MlflowExporter(uri, experiment, artifact_location=f"{artifacts}/{experiment}", **kwargs)


@pytest.fixture(scope="module")
def exported(tracking: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, str]:
    stream = make_stream(tmp_path_factory.mktemp("stream"))
    exporter = _exporter(tracking, "main")
    adapter = Adapter("mlflow", exporter.capabilities, tmp_path_factory.mktemp("adapted"))
    assert exporter.export(adapter.adapt(stream.records)) is ExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.mlflow_run_id is not None
    return stream, exporter.mlflow_run_id


@pytest.fixture(scope="module")
def client(tracking: tuple[str, str]) -> MlflowClient:
    return MlflowClient(tracking[0])


def test_is_an_exporter(tracking: tuple[str, str]) -> None:
    assert isinstance(_exporter(tracking, "protocol"), Exporter)


def test_metric_history_matches_every_point(exported: tuple[Stream, str], client: MlflowClient) -> None:
    stream, run_id = exported
    points = stream.points
    for name, positions in points.by_name().items():
        history = client.get_metric_history(run_id, name)
        assert [m.step for m in history] == points.steps[positions].tolist()
        assert [m.timestamp for m in history] == np.rint(points.times[positions] * 1000).astype(int).tolist()
        got = np.array([m.value for m in history])
        np.testing.assert_array_equal(got, points.values[positions])  # NaN == NaN here


def test_nan_point_is_read_back_as_nan(exported: tuple[Stream, str], client: MlflowClient) -> None:
    stream, run_id = exported
    step = int(stream.points.steps[10])
    (point,) = [m for m in client.get_metric_history(run_id, "loss") if m.step == step]
    assert np.isnan(point.value)


def test_epoch_spans_become_the_epoch_metric(exported: tuple[Stream, str], client: MlflowClient) -> None:
    _, run_id = exported
    history = client.get_metric_history(run_id, EPOCH_SERIES)
    assert [(m.step, m.value, m.timestamp) for m in history] == [
        (666, 0.0, 1_700_000_000_500),
        (1333, 1.0, 1_700_000_001_500),
        (2000, 2.0, 1_700_000_002_500),
    ]


def test_config_and_params_are_flattened_strings(exported: tuple[Stream, str], client: MlflowClient) -> None:
    _, run_id = exported
    assert client.get_run(run_id).data.params == {
        "seed": "7",
        "lr": "0.001",
        "model/depth": "4",
        "model/act": "gelu",
        "layers": "[1, 2]",
    }


def test_run_has_name_tags_times_and_status(exported: tuple[Stream, str], client: MlflowClient) -> None:
    _, run_id = exported
    run = client.get_run(run_id)
    assert run.info.run_name == "baseline"
    assert run.info.status == "FINISHED"
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_040_000)
    tags = run.data.tags
    assert tags["runtel.run_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert (tags["runtel.project"], tags["runtel.tags"], tags["runtel.status"]) == (
        "vision",
        '["smoke"]',
        "completed",
    )


def test_artifacts_models_figures_and_summary_are_stored(
    exported: tuple[Stream, str], client: MlflowClient, tmp_path: Path
) -> None:
    stream, run_id = exported
    expected = {
        "weights/v1/weights.bin",
        "models/ckpt/v2/weights.bin",
        "figures/curves/loss/step_1999/loss.png",
        "histograms/weights/l1/step_1999.json",
        "summary.json",
    }
    local = {path: Path(client.download_artifacts(run_id, path, str(tmp_path / path))) for path in expected}
    assert all(file.is_file() for file in local.values())
    assert local["weights/v1/weights.bin"].read_bytes() == stream.artifact.read_bytes()
    assert json.loads(local["summary.json"].read_text()) == {"loss": 0.25}


def test_histogram_json_is_exact(exported: tuple[Stream, str], client: MlflowClient, tmp_path: Path) -> None:
    _, run_id = exported
    local = client.download_artifacts(run_id, "histograms/weights/l1/step_1999.json", str(tmp_path))
    document = json.loads(Path(local).read_text())
    assert document["bin_edges"] == [-1.5, -0.25, 0.0, 0.125, 2.0]
    assert document["counts"] == [3, 10, 7, 1]
    assert (document["min"], document["max"], document["mean"], document["std"], document["count"]) == (
        -1.5,
        2.0,
        -0.1,
        0.7,
        21,
    )


def test_failed_crashed_and_killed_status_map(
    tracking: tuple[str, str], tmp_path: Path, client: MlflowClient
) -> None:
    for i, (status, expected) in enumerate(
        [("failed", "FAILED"), ("crashed", "KILLED"), ("killed", "KILLED")]
    ):
        run_id = f"{i:032x}"
        exporter = _exporter(tracking, "status")
        exporter.export([RunStarted(run_id, "r", "p", T0, {}), RunEnded(status, T0 + 1, error="boom")])
        assert exporter.mlflow_run_id is not None
        run = client.get_run(exporter.mlflow_run_id)
        assert (run.info.status, run.data.tags["runtel.status"]) == (expected, status)
        local = client.download_artifacts(exporter.mlflow_run_id, "error.txt", str(tmp_path / status))
        assert Path(local).read_text() == "boom"


def test_infinity_is_stored_as_the_largest_float(tracking: tuple[str, str], client: MlflowClient) -> None:
    """MLflow's SQL store cannot hold inf: it keeps +/-sys.float_info.max instead."""
    points = MetricPoints(
        names=("x",),
        index=np.zeros(3, dtype=np.int32),
        steps=np.arange(3, dtype=np.int64),
        times=np.full(3, T0),
        values=np.array([np.inf, -np.inf, 1.0]),
        span_ids=np.zeros(3, dtype=np.uint64),
    )
    exporter = _exporter(tracking, "inf")
    exporter.export([RunStarted("f" * 32, "r", "p", T0, {}), points])
    assert exporter.mlflow_run_id is not None
    history = client.get_metric_history(exporter.mlflow_run_id, "x")
    assert [m.value for m in history] == [sys.float_info.max, -sys.float_info.max, 1.0]


def test_second_export_of_the_same_run_is_refused(
    exported: tuple[Stream, str], tracking: tuple[str, str]
) -> None:
    stream, _ = exported
    with pytest.raises(RuntelError, match=r"already exported.*force=True"):
        _exporter(tracking, "main").export(stream.records[:1])


def test_force_replaces_the_earlier_run(
    tracking: tuple[str, str], tmp_path: Path, client: MlflowClient
) -> None:
    records = make_stream(tmp_path, run_id="e" * 32).records
    first = _exporter(tracking, "force")
    first.export(records)
    second = _exporter(tracking, "force", force=True)
    second.export(records)
    experiment = client.get_experiment_by_name("force")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [second.mlflow_run_id]
    assert client.get_run(str(first.mlflow_run_id)).info.lifecycle_stage == "deleted"


def test_a_retried_batch_adds_nothing(
    tracking: tuple[str, str], tmp_path: Path, client: MlflowClient
) -> None:
    stream = make_stream(tmp_path, run_id="d" * 32)
    exporter = _exporter(tracking, "retry")
    batch = stream.records[:3]  # RunStarted, ParamsLogged, MetricPoints
    exporter.export(batch)
    exporter.export(batch)
    assert exporter.mlflow_run_id is not None
    assert len(client.get_metric_history(exporter.mlflow_run_id, "loss")) == 2000


def test_export_after_shutdown_fails(tracking: tuple[str, str]) -> None:
    exporter = _exporter(tracking, "closed")
    exporter.shutdown()
    assert exporter.export([RunStarted("c" * 32, "r", "p", T0, {})]) is ExportResult.FAILURE


def test_import_does_not_import_mlflow() -> None:
    code = "import sys, runtel.exporters.mlflow; assert 'mlflow' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(MissingExtraError, match=r"pip install runtel\[mlflow\]"):
        MlflowExporter()


def test_times_are_rounded_to_whole_ms_by_the_adapter_and_reported(
    tracking: tuple[str, str], client: MlflowClient, tmp_path: Path
) -> None:
    times = np.array([T0 + 0.0004, T0 + 0.25, T0 + 1.0006, T0 + 2.123, T0 + 3.0, T0 + 4.9999])
    whole_ms = np.array([False, True, False, True, True, False])  # 0.25, 2.123 and 3.0 are whole ms
    points = MetricPoints(
        names=("t",),
        index=np.zeros(times.size, dtype=np.int32),
        steps=np.arange(times.size, dtype=np.int64),
        times=times,
        values=np.arange(times.size, dtype=np.float64),
        span_ids=np.zeros(times.size, dtype=np.uint64),
    )
    exporter = _exporter(tracking, "times")
    adapter = Adapter("mlflow", exporter.capabilities, tmp_path)
    adapted = adapter.adapt([RunStarted("e" * 32, "r", "p", T0, {}), points])
    sent = next(r for r in adapted if isinstance(r, MetricPoints)).times
    assert sent.tolist() == (np.rint(times * 1000) / 1000).tolist()
    assert exporter.export(adapted) is ExportResult.SUCCESS
    assert exporter.mlflow_run_id is not None
    history = sorted(client.get_metric_history(exporter.mlflow_run_id, "t"), key=lambda m: m.step)
    assert [m.timestamp for m in history] == [round(t * 1000) for t in sent.tolist()]
    rounded = adapter.report()["time_rounded"]
    assert rounded["count"] == int((~whole_ms).sum()) == 3
    assert [(e["step"], e["time"], e["sent_as"]) for e in rounded["examples"]] == [
        (int(i), float(times[i]), float(sent[i])) for i in np.flatnonzero(~whole_ms)
    ]
    exporter.shutdown()
