"""Media logged through ``runtel`` reach all four record backends live, and the same again on replay.

A real run logs every kind (a float image and float audio too, whose exact arrays 8-/16-bit backends
get as previews); the backends are read back with their own readers, and the adaptations in
``summary.json`` name each conversion. Replaying the stored run (``runtel export``) sends the same.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel
from runtel.exporters.tensorboard import TensorBoardExporter
from runtel.replay import export_run
from tests.media_records import decode_png, pixels

DEPTH = np.linspace(0.0, 1.0, 6 * 5, dtype=np.float32).reshape(6, 5)
WAVEFORM = (np.sin(np.arange(800) / 9.0) * 0.5).astype(np.float32)


def tensorboard_dir(root: Path) -> Path:
    (events,) = root.glob("*/events.out.tfevents.*")
    return events.parent


def accumulate(root: Path) -> Any:
    accumulator = EventAccumulator(
        str(tensorboard_dir(root)), size_guidance={"images": 0, "audio": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]]:
    tmp = tmp_path_factory.mktemp("media-e2e")
    samples = {step: pixels(10, 8, step) for step in (0, 1, 2)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_SILENT", "true")
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DATA_DIR", str(tmp / "wandb-data"))
        patch.delenv("WANDB_API_KEY", raising=False)
        run = runtel.init(
            project="media-e2e",
            name="live",
            base_dir=str(tmp / "runs"),
            exporters=["tensorboard", "mlflow", "wandb", "neptune"],
            exporter_options={
                "tensorboard": {"log_dir": str(tmp / "tb")},
                "mlflow": {
                    "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                    "artifact_location": str(tmp / "mlruns"),
                },
                "wandb": {"mode": "offline", "dir": str(tmp / "wandb-root")},
                "neptune": {"mode": "offline", "data_directory": str(tmp / "neptune")},
            },
            system_interval=0,
            export_timeout=120,
        )
        log_everything(run, samples)
        run.finish()
    return tmp, runtel.Store(tmp / "runs").run(run.id), samples


def log_everything(run: runtel.Run, samples: dict[int, npt.NDArray[np.uint8]]) -> None:
    for step, array in samples.items():
        run.log({"loss": 1.0 / (step + 1), "samples": runtel.Image(array, caption=f"step {step}")}, step=step)
    run.log({"preds": [runtel.Image(pixels(4, 4, 10 + i)) for i in range(3)]}, step=2)
    run.log_image("depth", DEPTH, step=2)
    run.log_table(
        "eval",
        [[1, "cat", runtel.Image(pixels(3, 3, 30))], [2, "dog", runtel.Image(DEPTH)]],
        columns=["id", "label", "img"],
        step=2,
    )
    run.log_text("gen", "once upon a time", step=1)
    run.log_audio("tts", WAVEFORM, sample_rate=8000, step=2)


@pytest.mark.slow  # the logged fixture: 12-32 s measured (one run exported live to four backends)
def test_live_tensorboard_holds_every_image_text_and_clip_at_its_step(
    logged: tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]],
) -> None:
    tmp, _, samples = logged
    accumulator = accumulate(tmp / "tb")
    assert {e.step: decode_png(e.encoded_image_string).tolist() for e in accumulator.Images("samples")} == {
        step: array.tolist() for step, array in samples.items()
    }
    (depth,) = accumulator.Images("depth")
    assert np.array_equal(decode_png(depth.encoded_image_string), np.rint(DEPTH * 255).astype(np.uint8))
    (gallery,) = accumulator.Tensors("preds")
    assert [decode_png(p).tolist() for p in gallery.tensor_proto.string_val[2:]] == [
        pixels(4, 4, 10 + i).tolist() for i in range(3)
    ]
    (text,) = accumulator.Tensors("gen")
    assert (text.step, text.tensor_proto.string_val[0].decode()) == (1, "once upon a time")
    (clip,) = accumulator.Audio("tts")
    with wave.open(io.BytesIO(clip.encoded_audio_string)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnframes()) == (8000, 2, WAVEFORM.size)
        samples16 = np.frombuffer(wav.readframes(WAVEFORM.size), dtype="<i2")
    assert np.array_equal(samples16, np.rint(WAVEFORM.astype(np.float64) * 32767).astype(np.int16))
    (table,) = accumulator.Tensors("eval")
    assert table.tensor_proto.string_val[0].decode().split("\n")[2].startswith("| 1 | cat | [image ")


@pytest.mark.slow  # the logged fixture: 12-32 s measured (one run exported live to four backends)
def test_live_adaptations_name_every_preview_sent(
    logged: tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]],
) -> None:
    _, stored, _ = logged
    exporters = stored.summary()["exporters"]
    for name in ("tensorboard", "mlflow", "wandb", "neptune"):
        assert exporters[name]["status"] == "ok"
        adaptations = exporters[name]["adaptations"]
        assert adaptations["image_sent_as_8bit"]["count"] == 2  # the depth image and the table's float cell
        assert adaptations["audio_sent_as_16bit"]["count"] == 1


@pytest.mark.slow  # the logged fixture: 12-32 s measured (one run exported live to four backends)
def test_live_mlflow_holds_the_step_images_and_the_table(
    logged: tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    tmp, _, _ = logged
    uri = f"sqlite:///{tmp}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("media-e2e")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    names = [i.path for i in client.list_artifacts(run.info.run_id, "images") if i.path.endswith(".png")]
    assert (
        sorted(n.split("/")[-1].split("+")[0] for n in names) == ["depth"] + ["preds"] * 3 + ["samples"] * 3
    )
    frame = client.load_table(experiment.experiment_id, "media/eval/step_2.json", run_ids=[run.info.run_id])
    assert frame["label"].tolist() == ["cat", "dog"]
    depth_cell = Path(client.download_artifacts(run.info.run_id, frame["img"].tolist()[1]["filepath"]))
    assert np.array_equal(decode_png(depth_cell.read_bytes()), np.rint(DEPTH * 255).astype(np.uint8))


@pytest.mark.slow  # the logged fixture: 12-32 s measured (one run exported live to four backends)
def test_replay_sends_the_media_as_live_export_did(
    logged: tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]], tmp_path: Path
) -> None:
    tmp, stored, _ = logged
    report = export_run(stored, TensorBoardExporter(str(tmp_path / "tb")))
    assert report["adaptations"]["image_sent_as_8bit"]["count"] == 2
    live, replayed = accumulate(tmp / "tb"), accumulate(tmp_path / "tb")
    for tag in ("samples", "depth"):
        assert [(e.step, e.encoded_image_string) for e in replayed.Images(tag)] == [
            (e.step, e.encoded_image_string) for e in live.Images(tag)
        ]
    for tag in ("preds", "gen", "eval", "runtel/captions/samples"):
        assert [(e.step, list(e.tensor_proto.string_val)) for e in replayed.Tensors(tag)] == [
            (e.step, list(e.tensor_proto.string_val)) for e in live.Tensors(tag)
        ]
    assert [e.encoded_audio_string for e in replayed.Audio("tts")] == [
        e.encoded_audio_string for e in live.Audio("tts")
    ]


@pytest.mark.slow  # the logged fixture: 12-32 s measured (one run exported live to four backends)
def test_live_wandb_history_holds_the_images_at_their_steps(
    logged: tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]],
) -> None:
    from tests.readers.wandb_log import read_finished_log

    tmp, stored, samples = logged
    log = read_finished_log(tmp / "wandb-root", stored.id)
    (files,) = (tmp / "wandb-root" / "wandb").glob(f"offline-run-*-{stored.id}/files")
    for step, array in samples.items():
        path = log.history[step]["samples/path"]
        assert np.array_equal(decode_png((files / path).read_bytes()), array)
        assert log.history[step]["loss"] == 1.0 / (step + 1)
    assert log.history[2]["preds/count"] == 3 and log.history[2]["eval/nrows"] == 2


@pytest.mark.slow  # the logged fixture: 12-32 s measured (one run exported live to four backends)
def test_live_neptune_holds_the_image_series_and_the_gallery_split(
    logged: tuple[Path, runtel.StoredRun, dict[int, npt.NDArray[np.uint8]]],
) -> None:
    import base64

    from tests.readers.neptune_offline import offline_runs, read_run

    tmp, stored, samples = logged
    (directory,) = offline_runs(tmp / "neptune")
    run = read_run(directory)
    assert [
        (step, decode_png(base64.b64decode(v.data)).tolist()) for step, v, _ in run.series["images/samples"]
    ] == [(step, array.tolist()) for step, array in samples.items()]
    assert sorted(k for k in run.series if k.startswith("images/preds/")) == [
        f"images/preds/{i}" for i in range(3)
    ]
    assert stored.summary()["exporters"]["neptune"]["adaptations"]["gallery_split"]["count"] == 1
