"""The TensorBoard exporter, read back with TensorBoard's own ``EventAccumulator``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from runtel._adapt import Adapter
from runtel.errors import MissingExtraError, RuntelError
from runtel.exporters.base import EPOCH_SERIES, Exporter, ExportResult
from runtel.exporters.tensorboard import TensorBoardExporter
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
RUN_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _points() -> MetricPoints:
    """3 metrics over 2,000 steps (4,000 points) with a NaN, +/-inf and a value beyond float32."""
    rng = np.random.default_rng(11)
    n = 2000
    steps = np.repeat(np.arange(n, dtype=np.int64), 2)
    index = np.tile(np.array([0, 1], dtype=np.int32), n)
    index[1::4] = 2
    values = rng.standard_normal(2 * n) * 10.0 ** rng.integers(-8, 8, 2 * n)
    values[[10, 12, 14, 16]] = [np.nan, np.inf, -np.inf, 1e300]
    return MetricPoints(
        names=("loss", "acc", "lr"),
        index=index,
        steps=steps,
        times=T0 + steps * 0.0137 + rng.random(2 * n) * 1e-3,
        values=values,
        span_ids=np.zeros(2 * n, dtype=np.uint64),
    )


def make_stream(tmp: Path, points: MetricPoints) -> list[Record]:
    artifact = tmp / "weights.bin"
    artifact.write_bytes(b"\x00\x01" * 2048)
    epochs = [
        SpanEnded(
            f"epoch {e}", "epoch", RUN_ID, f"{e + 1:016x}", None, T0 + e, T0 + e + 0.5,
            {"epoch": e, "runtel.step_end": (e + 1) * 666},
        )
        for e in range(3)
    ]  # fmt: skip
    return [
        RunStarted(RUN_ID, "baseline", "vision", T0, {"seed": 7}),
        ParamsLogged({"lr": 0.001, "model": {"depth": 4, "act": "gelu"}, "amp": True}, T0 + 0.1),
        points,
        *epochs,
        ArtifactLogged("weights", 1, "ab" * 32, 4096, str(artifact), T0 + 30, 1999),
        ArtifactLogged("ckpt", 2, "cd" * 32, 4096, str(artifact), T0 + 31, None, kind="model"),
        FigureLogged("curves/loss", str(write_png(tmp / "loss.png")), 1999, T0 + 32),
        HistogramLogged(
            "weights/l1", 1999, T0 + 33, np.array([-1.5, -0.25, 0.0, 0.125, 2.0]),
            np.array([3, 10, 7, 1], dtype=np.int64), min=-1.5, max=2.0, mean=-0.1, std=0.7, count=21,
        ),
        RunEnded("failed", T0 + 40, error="Traceback: boom", summary={"loss": 0.25}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MetricPoints, Path, EventAccumulator]:
    tmp = tmp_path_factory.mktemp("tb")
    points = _points()
    exporter = TensorBoardExporter(str(tmp / "runs"))
    records = Adapter("tensorboard", exporter.capabilities, tmp / "adapted").adapt(make_stream(tmp, points))
    assert exporter.export(records[:3]) is ExportResult.SUCCESS
    assert exporter.export(records[3:]) is ExportResult.SUCCESS
    exporter.shutdown()
    run_dir = tmp / "runs" / "baseline_4bf92f35"
    assert exporter.run_dir == str(run_dir)
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0, "images": 0}
    )
    accumulator.Reload()
    return points, run_dir, accumulator


def test_is_an_exporter(tmp_path: Path) -> None:
    assert isinstance(TensorBoardExporter(str(tmp_path)), Exporter)


def test_every_point_has_its_step_walltime_and_float32_value(
    exported: tuple[MetricPoints, Path, EventAccumulator],
) -> None:
    points, _, accumulator = exported
    for name, positions in points.by_name().items():
        events = accumulator.Scalars(name)
        assert [e.step for e in events] == points.steps[positions].tolist()
        assert [e.wall_time for e in events] == points.times[positions].tolist()  # float64, exact
        with np.errstate(over="ignore"):  # 1e300 is beyond float32: inf, as TensorBoard stores it
            expected = points.values[positions].astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal([e.value for e in events], expected)


def test_nan_and_infinities_are_kept_and_float32_overflow_is_infinite(
    exported: tuple[MetricPoints, Path, EventAccumulator],
) -> None:
    _, _, accumulator = exported
    values = {e.step: e.value for e in accumulator.Scalars("loss")}
    assert np.isnan(values[5])
    assert (values[6], values[7], values[8]) == (np.inf, -np.inf, np.inf)


def test_epoch_spans_become_the_epoch_scalar(exported: tuple[MetricPoints, Path, EventAccumulator]) -> None:
    _, _, accumulator = exported
    events = accumulator.Scalars(EPOCH_SERIES)
    assert [(e.step, e.value, e.wall_time) for e in events] == [
        (666, 0.0, T0 + 0.5),
        (1332, 1.0, T0 + 1.5),
        (1998, 2.0, T0 + 2.5),
    ]


def test_hparams_session_is_in_the_run_directory(
    exported: tuple[MetricPoints, Path, EventAccumulator],
) -> None:
    _, run_dir, accumulator = exported
    assert [p.name for p in run_dir.iterdir() if p.is_dir()] == ["artifacts"]  # no hparams sub-run
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert {k: v.WhichOneof("kind") for k, v in hparams.items()} == {
        "seed": "number_value",
        "lr": "number_value",
        "model/depth": "number_value",
        "model/act": "string_value",
        "amp": "bool_value",
    }
    assert (hparams["lr"].number_value, hparams["model/act"].string_value, hparams["amp"].bool_value) == (
        0.001,
        "gelu",
        True,
    )
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert sorted(m.name.tag for m in experiment.metric_infos) == ["acc", "loss", "lr", EPOCH_SERIES]
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == api_pb2.Status.Value("STATUS_FAILURE")
    assert end.session_end_info.end_time_secs == T0 + 40


def test_histogram_keeps_bucket_edges_and_counts(
    exported: tuple[MetricPoints, Path, EventAccumulator],
) -> None:
    _, _, accumulator = exported
    (event,) = accumulator.Histograms("histograms/weights/l1")
    histogram = event.histogram_value
    assert (event.step, event.wall_time) == (1999, T0 + 33)
    assert histogram.bucket_limit == [-0.25, 0.0, 0.125, 2.0]
    assert histogram.bucket == [3.0, 10.0, 7.0, 1.0]
    assert (histogram.min, histogram.max, histogram.num) == (-1.5, 2.0, 21.0)


def test_figure_is_the_png_unchanged(
    exported: tuple[MetricPoints, Path, EventAccumulator], tmp_path: Path
) -> None:
    _, _, accumulator = exported
    (image,) = accumulator.Images("figures/curves/loss")
    assert (image.step, image.width, image.height) == (1999, 3, 2)
    assert image.encoded_image_string == write_png(tmp_path / "same.png").read_bytes()


def test_artifacts_are_copied_beside_the_events(
    exported: tuple[MetricPoints, Path, EventAccumulator],
) -> None:
    _, run_dir, _ = exported
    assert (run_dir / "artifacts/weights/v1/weights.bin").read_bytes() == b"\x00\x01" * 2048
    assert (run_dir / "artifacts/models/ckpt/v2/weights.bin").is_file()


def test_params_artifacts_summary_and_error_are_text(
    exported: tuple[MetricPoints, Path, EventAccumulator],
) -> None:
    _, _, accumulator = exported

    def last_text(tag: str) -> str:
        return accumulator.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()

    assert "| model/depth | 4 |" in last_text("runtel/params")
    assert "artifacts/models/ckpt/v2/weights.bin" in last_text("runtel/artifacts")
    assert '"loss": 0.25' in last_text("runtel/summary")
    assert "Traceback: boom" in last_text("runtel/error")


def test_second_export_of_the_same_run_is_refused(tmp_path: Path) -> None:
    records = make_stream(tmp_path, _points())[:1]
    TensorBoardExporter(str(tmp_path)).export(records)
    with pytest.raises(RuntelError, match=r"already exported.*force=True"):
        TensorBoardExporter(str(tmp_path)).export(records)
    assert TensorBoardExporter(str(tmp_path), force=True).export(records) is ExportResult.SUCCESS


def test_a_batch_with_a_missing_artifact_writes_nothing(tmp_path: Path) -> None:
    exporter = TensorBoardExporter(str(tmp_path))
    missing = ArtifactLogged("gone", 1, "00" * 32, 1, str(tmp_path / "gone.bin"), T0, None)
    batch: list[Record] = [RunStarted(RUN_ID, "r", "p", T0, {}), _points(), missing]
    with pytest.raises(FileNotFoundError):
        exporter.export(batch)
    exporter.export(batch[:2])  # the dispatcher's retry, once the cause is gone
    exporter.force_flush()
    accumulator = EventAccumulator(str(tmp_path / "r_4bf92f35"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert len(accumulator.Scalars("loss")) == 2000


def test_import_does_not_import_tensorboardx() -> None:
    code = "import sys, runtel.exporters.tensorboard; assert 'tensorboardX' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_tensorboardx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(MissingExtraError, match=r"pip install runtel\[tensorboard\]"):
        TensorBoardExporter()
