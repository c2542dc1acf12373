"""The Neptune exporter against real neptune 1.x in offline mode, read back from its operation log."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtel.errors import ConfigError, MissingExtraError
from runtel.exporters.base import Exporter, ExportResult
from runtel.exporters.neptune import CAPABILITIES, NeptuneExporter
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    Heartbeat,
    HistogramLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEnded,
    RunStarted,
    SpanEnded,
)
from tests.readers.neptune_offline import NeptuneRun, offline_runs, read_run

RUN_ID = "0af7651916cd43dd8448eb211c80319c"
METRICS = ("train/loss", "train/acc", "lr")
STEPS = 1500
T0 = 1_700_000_000.0


def metric_points(steps: range) -> MetricPoints:
    """The three metrics at every step, in the order a training loop logs them; NaN/inf at a few steps."""
    step_col = np.repeat(np.asarray(steps, dtype=np.int64), len(METRICS))
    index = np.tile(np.arange(len(METRICS), dtype=np.int32), len(steps))
    values = np.sin(step_col * 0.01 + index) * (index + 1)
    values[(step_col % 97 == 0) & (index == 0)] = math.nan
    values[(step_col % 101 == 0) & (index == 1)] = math.inf
    return MetricPoints(
        names=METRICS,
        index=index,
        steps=step_col,
        times=T0 + step_col * 0.125 + index * 0.001,
        values=values,
        span_ids=np.zeros(len(index), dtype=np.uint64),
    )


def epoch_span(epoch: int, step_end: int) -> SpanEnded:
    return SpanEnded(
        name=f"epoch {epoch}",
        kind="epoch",
        trace_id=RUN_ID,
        span_id=f"{epoch + 1:016x}",
        parent_span_id="00f067aa0ba902b7",
        start_time=T0,
        end_time=T0 + (step_end + 1) * 0.125,
        attributes={"epoch": epoch, "runtel.step_end": step_end},
    )


def run_stream(tmp_path: Path) -> list[Record]:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(4096))
    figure = tmp_path / "confusion.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(figure)
    half = STEPS // 2
    return [
        RunStarted(
            run_id=RUN_ID,
            name="resnet-baseline",
            project="runtel-tests",
            start_time=T0,
            config={"model": {"depth": 18, "width": 64}, "seed": 7},
            tags=("baseline", "cifar"),
        ),
        ParamsLogged(params={"optimizer": {"name": "adam", "lr": 3e-4}}, time=T0),
        metric_points(range(half)),
        epoch_span(0, half - 1),
        Heartbeat(time=T0 + 100),
        metric_points(range(half, STEPS)),
        epoch_span(1, STEPS - 1),
        ParamsLogged(params={"optimizer": {"lr": 1e-4}}, time=T0 + 200),
        HistogramLogged(
            name="weights/conv1",
            step=STEPS - 1,
            time=T0 + 300,
            bin_edges=np.linspace(-1.0, 1.0, 9),
            counts=np.array([1, 4, 9, 16, 16, 9, 4, 1], dtype=np.int64),
            min=-1.0,
            max=1.0,
            mean=0.0,
            std=0.4,
            count=60,
        ),
        FigureLogged(name="confusion", path=str(figure), step=STEPS - 1, time=T0 + 350),
        ArtifactLogged(
            name="checkpoint",
            version=2,
            sha256="0" * 64,
            size=4096,
            path=str(weights),
            time=T0 + 400,
            step=STEPS - 1,
            kind="model",
        ),
        RunEnded(status="failed", end_time=T0 + 500, error="ValueError: boom", summary={"best_acc": 0.93}),
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], NeptuneRun]:
    tmp_path = tmp_path_factory.mktemp("neptune")
    records = run_stream(tmp_path)
    exporter = NeptuneExporter(data_directory=str(tmp_path / ".neptune"))
    for lo in range(0, len(records), 3):
        assert exporter.export(records[lo : lo + 3]) is ExportResult.SUCCESS
    assert exporter.force_flush()
    exporter.shutdown()
    (directory,) = offline_runs(tmp_path / ".neptune")
    return records, read_run(directory)


def test_exporter_satisfies_protocol() -> None:
    exporter = NeptuneExporter()
    assert isinstance(exporter, Exporter)
    assert exporter.name == "neptune"
    assert exporter.capabilities is CAPABILITIES


def test_every_finite_point_is_in_its_series_with_step_and_time(
    exported: tuple[list[Record], NeptuneRun],
) -> None:
    records, run = exported
    expected: dict[str, list[tuple[float, float, float]]] = {name: [] for name in METRICS}
    for batch in (r for r in records if isinstance(r, MetricPoints)):
        for i in range(len(batch)):
            if math.isfinite(batch.values[i]):
                point = (float(batch.steps[i]), float(batch.values[i]), float(batch.times[i]))
                expected[METRICS[batch.index[i]]].append(point)
    for name in METRICS:
        assert run.series[f"metrics/{name}"] == expected[name]


def test_non_finite_points_are_dropped_by_neptune(exported: tuple[list[Record], NeptuneRun]) -> None:
    _, run = exported
    loss_steps = {step for step, _, _ in run.series["metrics/train/loss"]}
    acc_steps = {step for step, _, _ in run.series["metrics/train/acc"]}
    assert loss_steps == {s for s in range(STEPS) if s % 97}
    assert acc_steps == {s for s in range(STEPS) if s % 101}


def test_epoch_spans_become_a_step_indexed_epoch_series(exported: tuple[list[Record], NeptuneRun]) -> None:
    _, run = exported
    half = STEPS // 2
    assert run.series["epoch"] == [(half - 1, 0, T0 + half * 0.125), (STEPS - 1, 1, T0 + STEPS * 0.125)]


def test_parameters_hold_config_and_merged_params(exported: tuple[list[Record], NeptuneRun]) -> None:
    _, run = exported
    params = {k: v for k, v in run.fields.items() if k.startswith("parameters/")}
    assert params == {
        "parameters/model/depth": 18,
        "parameters/model/width": 64,
        "parameters/seed": 7,
        "parameters/optimizer/name": "adam",
        "parameters/optimizer/lr": 1e-4,
    }


def test_run_identity_status_and_summary(exported: tuple[list[Record], NeptuneRun]) -> None:
    _, run = exported
    assert run.fields["sys/name"] == "resnet-baseline"
    assert set(run.tags) == {"baseline", "cifar"}  # a Neptune string set: no order
    assert run.fields["runtel/run_id"] == RUN_ID
    assert run.fields["runtel/status"] == "failed"
    assert run.fields["runtel/error"] == "ValueError: boom"
    assert run.fields["sys/failed"] is True
    assert run.fields["summary/best_acc"] == 0.93


def test_histogram_is_a_json_file(exported: tuple[list[Record], NeptuneRun]) -> None:
    _, run = exported
    upload = run.files[f"histograms/weights/conv1/step_{STEPS - 1}"]
    content = json.loads((run.directory / "upload_path" / upload.tmp_file_name).read_text())
    assert content["counts"] == [1, 4, 9, 16, 16, 9, 4, 1]
    assert content["bin_edges"] == np.linspace(-1.0, 1.0, 9).tolist()
    assert (content["step"], content["count"], content["std"]) == (STEPS - 1, 60, 0.4)


def test_figure_is_an_image_series_point_at_its_step(exported: tuple[list[Record], NeptuneRun]) -> None:
    _, run = exported
    ((step, _image, ts),) = run.series["figures/confusion"]
    assert (step, ts) == (STEPS - 1, T0 + 350)


def test_model_artifact_references_the_stored_file(exported: tuple[list[Record], NeptuneRun]) -> None:
    records, run = exported
    artifact = next(r for r in records if isinstance(r, ArtifactLogged))
    upload = run.files["models/checkpoint/v2/file"]
    assert upload.file_path == artifact.path
    assert run.fields["models/checkpoint/v2/sha256"] == artifact.sha256


def test_api_token_is_written_nowhere(tmp_path: Path) -> None:
    token = "local-" + "t0ken" * 12
    exporter = NeptuneExporter(api_token=token, data_directory=str(tmp_path / ".neptune"))
    exporter.export([RunStarted(run_id=RUN_ID, name="n", project="p", start_time=T0, config={"a": 1})])
    exporter.export([RunEnded(status="completed", end_time=T0 + 1)])
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert leaks == []


def test_module_import_leaves_neptune_unimported() -> None:
    code = "import sys, runtel.exporters.neptune; sys.exit('neptune' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_neptune_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "neptune", None)
    with pytest.raises(MissingExtraError, match=r"pip install runtel\[neptune\]"):
        NeptuneExporter()


def test_force_is_refused_for_a_neptune_server_and_harmless_offline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="delete it in Neptune"):
        NeptuneExporter(mode="async", force=True)
    exporter = NeptuneExporter(mode="offline", data_directory=str(tmp_path), force=True)
    started = RunStarted(run_id="f" * 32, name="r", project="p", start_time=0.0, config={})
    assert exporter.export([started]) is ExportResult.SUCCESS
    exporter.shutdown()
