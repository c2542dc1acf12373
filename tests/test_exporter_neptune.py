"""The Neptune exporter against real neptune 1.x in offline mode, read back from its operation log."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtel.errors import ConfigError, MissingExtraError
from runtel.exporters.base import EPOCH_SERIES, Exporter, ExportResult
from runtel.exporters.neptune import CAPABILITIES, NeptuneExporter
from runtel.records import (
    ArtifactLogged,
    MetricPoints,
    Record,
    RunEnded,
    RunStarted,
)
from tests.readers.neptune_offline import NeptuneRun, offline_runs, read_run
from tests.streams import METRICS, STEPS, T0, training_stream

RUN_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], NeptuneRun]:
    tmp_path = tmp_path_factory.mktemp("neptune")
    records = training_stream(tmp_path, RUN_ID, artifact_version=2)
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
    assert run.series[EPOCH_SERIES] == [(half - 1, 0, T0 + half * 0.125), (STEPS - 1, 1, T0 + STEPS * 0.125)]


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
