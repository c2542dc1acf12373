"""Media through each real backend client, read back with that library's own reader.

One hand-built stream (what a run folder's ``media/`` holds and the records naming it) goes through
the adaptation step and the exporter; every image's pixels, every table cell, text and clip is then
compared with what the backend's reader returns, at its step.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from runtel._adapt import Adapter
from runtel.exporters.base import Exporter, ExportResult
from runtel.records import MediaLogged, Record, RunEnded, RunStarted
from tests import media_records as media

RUN_ID = "5c1e9a7b3d2f4e60a8b7c6d5e4f3a2b1"
ROWS = [
    [0, "a cat", 0.25, media.pixels(6, 5, 20)],
    [1, "a | dog", math.nan, media.pixels(4, 3, 22)],
    [2, "é\nnewline", -math.inf, media.pixels(6, 5, 21)],
]
COLUMNS = [("id", "int64"), ("text", "object"), ("score", "float64"), ("img", "image")]
TEXT = "The quick brown fox <b>jumps</b> | over é 🦊\nsecond line"


@dataclass
class Stream:
    records: list[Record]
    samples: dict[int, npt.NDArray[np.uint8]]  # step -> pixels of "samples"
    depth: npt.NDArray[np.uint8]  # the float image's 8-bit preview
    preds: list[npt.NDArray[np.uint8]]  # the gallery at step 10
    wav: bytes
    run_dir: Path


def make_stream(run_dir: Path) -> Stream:
    samples = {0: media.pixels(12, 16, 1), 5: media.pixels(12, 16, 2)}
    depth = np.linspace(0, 1, 8 * 9, dtype=np.float32).reshape(8, 9)
    preds = [media.pixels(7, 7, seed, channels=4) for seed in (3, 4, 5)]
    clip = media.audio(run_dir, "tts", 3, media.tone(2000, 8000), 8000, caption="hello")
    records: list[Record] = [
        RunStarted(RUN_ID, "media-run", "media", media.T0, {"lr": 0.1}),
        media.image(run_dir, "samples", 0, samples[0], caption="pred=3 true=5"),
        media.text(run_dir, "gen", 2, TEXT),
        clip,
        media.image(run_dir, "samples", 5, samples[5], caption="pred=1"),
        media.float_image(run_dir, "depth", 5, depth),
        *media.gallery(run_dir, "preds", 10, preds),
        media.table(run_dir, "eval/predictions", 10, COLUMNS, ROWS),
        RunEnded("completed", media.T0 + 60),
    ]
    preview = np.rint(depth * 255).astype(np.uint8)
    return Stream(records, samples, preview, preds, Path(clip.path).read_bytes(), run_dir)


def export(exporter: Exporter, stream: Stream, scratch: Path, batch: int = 4) -> dict[str, Any]:
    """Export in small batches, so a gallery arrives over two of them; returns the adaptations."""
    adapter = Adapter(exporter.name, exporter.capabilities, scratch)
    for lo in range(0, len(stream.records), batch):
        assert exporter.export(adapter.adapt(stream.records[lo : lo + batch])) is ExportResult.SUCCESS
    assert exporter.force_flush()
    exporter.shutdown()
    return adapter.report()


def pixels_of(data: bytes) -> npt.NDArray[np.uint8]:
    return media.decode_png(data)


def same_cell(a: Any, b: Any) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


# ---------------------------------------------------------------------------------------------- TensorBoard
@pytest.fixture(scope="module")
def tensorboard(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, Any, dict[str, Any]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runtel.exporters.tensorboard import TensorBoardExporter

    tmp = tmp_path_factory.mktemp("tb")
    stream = make_stream(tmp / "run")
    exporter = TensorBoardExporter(str(tmp / "runs"))
    report = export(exporter, stream, tmp / "adapted")
    assert exporter.run_dir is not None
    accumulator = EventAccumulator(exporter.run_dir, size_guidance={"images": 0, "audio": 0, "tensors": 0})
    accumulator.Reload()
    return stream, accumulator, report


def test_tensorboard_images_decode_to_the_logged_pixels_at_their_steps(
    tensorboard: tuple[Stream, Any, dict[str, Any]],
) -> None:
    stream, accumulator, _ = tensorboard
    events = accumulator.Images("samples")
    assert [e.step for e in events] == [0, 5]
    for event in events:
        assert np.array_equal(pixels_of(event.encoded_image_string), stream.samples[event.step])
        assert (event.width, event.height) == (16, 12)
    (depth,) = accumulator.Images("depth")
    assert depth.step == 5 and np.array_equal(pixels_of(depth.encoded_image_string), stream.depth)


def test_tensorboard_gallery_is_one_image_batch_with_every_item(
    tensorboard: tuple[Stream, Any, dict[str, Any]],
) -> None:
    stream, accumulator, _ = tensorboard
    (event,) = accumulator.Tensors("preds")
    assert event.step == 10
    assert accumulator.SummaryMetadata("preds").plugin_data.plugin_name == "images"
    width, height, *pngs = event.tensor_proto.string_val
    assert (width, height) == (b"7", b"7")
    assert [pixels_of(png).tolist() for png in pngs] == [p.tolist() for p in stream.preds]


def test_tensorboard_captions_are_text_at_the_images_step(
    tensorboard: tuple[Stream, Any, dict[str, Any]],
) -> None:
    _, accumulator, _ = tensorboard
    captions = {
        e.step: e.tensor_proto.string_val[0].decode() for e in accumulator.Tensors("runtel/captions/samples")
    }
    assert captions == {0: "0. pred=3 true=5", 5: "0. pred=1"}
    (gallery,) = accumulator.Tensors("runtel/captions/preds")
    assert gallery.tensor_proto.string_val[0].decode() == "0. item 0\n1. item 1\n2. item 2"
    (clip,) = accumulator.Tensors("runtel/captions/tts")
    assert (clip.step, clip.tensor_proto.string_val[0].decode()) == (3, "0. hello")


def test_tensorboard_text_and_audio_are_exact_at_their_steps(
    tensorboard: tuple[Stream, Any, dict[str, Any]],
) -> None:
    stream, accumulator, _ = tensorboard
    (text,) = accumulator.Tensors("gen")
    assert text.step == 2 and text.tensor_proto.string_val[0].decode() == TEXT
    assert accumulator.SummaryMetadata("gen").plugin_data.plugin_name == "text"
    (clip,) = accumulator.Audio("tts")
    assert clip.step == 3 and clip.encoded_audio_string == stream.wav
    assert (clip.sample_rate, clip.length_frames, clip.content_type) == (8000, 2000, "audio/wav")


def test_tensorboard_table_is_a_markdown_table(tensorboard: tuple[Stream, Any, dict[str, Any]]) -> None:
    _, accumulator, _ = tensorboard
    (table,) = accumulator.Tensors("eval/predictions")
    lines = table.tensor_proto.string_val[0].decode().split("\n")
    assert table.step == 10
    assert lines[:2] == ["| id | text | score | img |", "|---|---|---|---|"]
    assert lines[2].startswith("| 0 | a cat | 0.25 | [image ") and lines[2].endswith(".png] cell img |")
    assert lines[3].startswith("| 1 | a \\| dog | nan | [image ")
    assert lines[4].startswith("| 2 | é newline | -inf | [image ")


def test_tensorboard_reports_the_8bit_preview_and_the_image_cells_as_text(
    tensorboard: tuple[Stream, Any, dict[str, Any]],
) -> None:
    _, _, report = tensorboard
    assert report["image_sent_as_8bit"]["count"] == 1
    assert report["table_images_as_text"]["examples"] == [
        {"name": "eval/predictions", "step": 10, "column": "img", "empty_cells": 0}
    ]
    assert set(report) == {"image_sent_as_8bit", "table_images_as_text"}


# ---------------------------------------------------------------------------------------------- MLflow
@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, Any, str, str, dict[str, Any]]:
    from mlflow.tracking import MlflowClient

    from runtel.exporters.mlflow import MlflowExporter

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    stream = make_stream(tmp / "run")
    exporter = MlflowExporter(uri, "media", artifact_location=str(tmp / "artifacts"))
    report = export(exporter, stream, tmp / "adapted")
    assert exporter.mlflow_run_id is not None
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("media")
    assert experiment is not None
    return stream, client, exporter.mlflow_run_id, experiment.experiment_id, report


def _step_images(client: Any, run_id: str, tmp: Path) -> dict[tuple[str, int], list[npt.NDArray[np.uint8]]]:
    """MLflow's step images (``images/<key>+step+<n>+timestamp+<ms>+<uuid>.png``) by key and step."""
    found: dict[tuple[str, int], list[tuple[int, npt.NDArray[np.uint8]]]] = {}
    for info in client.list_artifacts(run_id, "images"):
        name = info.path.rsplit("/", 1)[-1]
        if not name.endswith(".png"):
            continue
        key, _, step, _, stamp, _ = name[: -len(".png")].split("+")
        local = client.download_artifacts(run_id, info.path, str(tmp))
        found.setdefault((key.replace("~", "/"), int(step)), []).append(
            (int(stamp), pixels_of(Path(local).read_bytes()))
        )
    return {k: [p for _, p in v] for k, v in found.items()}


def test_mlflow_step_images_hold_the_pixels_at_their_steps(
    mlflow_run: tuple[Stream, Any, str, str, dict[str, Any]], tmp_path: Path
) -> None:
    stream, client, run_id, _, _ = mlflow_run
    images = _step_images(client, run_id, tmp_path)
    assert set(images) == {("samples", 0), ("samples", 5), ("depth", 5), ("preds", 10)}
    assert np.array_equal(images["samples", 0][0], stream.samples[0])
    assert np.array_equal(images["samples", 5][0], stream.samples[5])
    assert np.array_equal(images["depth", 5][0], stream.depth)
    assert sorted(p.tobytes() for p in images["preds", 10]) == sorted(p.tobytes() for p in stream.preds)
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"


def test_mlflow_captions_are_kept_beside_the_step_images(
    mlflow_run: tuple[Stream, Any, str, str, dict[str, Any]], tmp_path: Path
) -> None:
    _, client, run_id, _, _ = mlflow_run
    local = client.download_artifacts(run_id, "media/preds/step_10/captions.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == {"0": "item 0", "1": "item 1", "2": "item 2"}


def test_mlflow_table_loads_with_every_cell(
    mlflow_run: tuple[Stream, Any, str, str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client, run_id, experiment_id, _ = mlflow_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)  # load_table searches the global store
    frame = client.load_table(experiment_id, "media/eval/predictions/step_10.json", run_ids=[run_id])
    assert list(frame.columns) == ["id", "text", "score", "img"]
    assert frame["id"].tolist() == [0, 1, 2]
    assert frame["text"].tolist() == ["a cat", "a | dog", "é\nnewline"]
    # MLflow stores a table through DataFrame.to_json, which writes NaN and -inf as null: -inf is
    # sent as an empty cell, reported, and the exact table goes beside it as an artifact
    assert [
        same_cell(a, b) for a, b in zip(frame["score"].tolist(), [0.25, math.nan, math.nan], strict=True)
    ] == [True] * 3
    for cell, row in zip(frame["img"].tolist(), ROWS, strict=True):
        assert cell["type"] == "image"
        assert np.array_equal(
            pixels_of(Path(client.download_artifacts(run_id, cell["filepath"])).read_bytes()), row[3]
        )


def test_mlflow_reports_the_infinite_cells_and_keeps_the_exact_table(
    mlflow_run: tuple[Stream, Any, str, str, dict[str, Any]], tmp_path: Path
) -> None:
    stream, client, run_id, _, report = mlflow_run
    (example,) = report["table_infinity_as_null"]["examples"]
    assert (example["column"], example["cells"]) == ("score", 1)
    (exact,) = client.list_artifacts(run_id, f"{example['full']}/v1")
    table = next(r for r in stream.records if isinstance(r, MediaLogged) and r.kind == "table")
    assert (
        Path(client.download_artifacts(run_id, exact.path, str(tmp_path))).read_bytes()
        == Path(table.path).read_bytes()
    )


def test_mlflow_text_and_audio_are_exact_artifacts(
    mlflow_run: tuple[Stream, Any, str, str, dict[str, Any]], tmp_path: Path
) -> None:
    stream, client, run_id, _, _ = mlflow_run
    text = client.download_artifacts(run_id, "media/gen/step_2.txt", str(tmp_path))
    assert Path(text).read_text(encoding="utf-8") == TEXT
    clip, captions = sorted(
        client.list_artifacts(run_id, "media/tts/step_3"), key=lambda i: i.path.endswith(".json")
    )
    assert clip.path == f"media/tts/step_3/{media.store_file(stream.run_dir, stream.wav, 'wav')[1]}.wav"
    assert Path(client.download_artifacts(run_id, clip.path, str(tmp_path))).read_bytes() == stream.wav
    assert json.loads(Path(client.download_artifacts(run_id, captions.path, str(tmp_path))).read_text()) == {
        "0": "hello"
    }


def test_mlflow_retried_batch_adds_no_second_image_or_table_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from runtel.exporters.mlflow import MlflowExporter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    stream = make_stream(tmp_path / "run")
    exporter = MlflowExporter(uri, "retry", artifact_location=str(tmp_path / "artifacts"))
    records = Adapter("mlflow", exporter.capabilities, tmp_path / "adapted").adapt(stream.records[:-1])
    assert exporter.export(records) is ExportResult.SUCCESS
    assert exporter.export(records) is ExportResult.SUCCESS  # as the dispatcher retries a batch
    run_id = exporter.mlflow_run_id
    client = MlflowClient(uri)
    assert len(_step_images(client, run_id, tmp_path / "dl")) == 4
    assert len([i for i in client.list_artifacts(run_id, "images") if i.path.endswith(".png")]) == 6
    experiment = client.get_experiment_by_name("retry")
    assert experiment is not None
    frame = client.load_table(
        experiment.experiment_id, "media/eval/predictions/step_10.json", run_ids=[run_id]
    )
    assert len(frame) == 3


# ---------------------------------------------------------------------------------------------- W&B
@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, Any, Path, dict[str, Any]]:
    from runtel.exporters.wandb import WandbExporter
    from tests.readers.wandb_log import read_finished_log

    tmp = tmp_path_factory.mktemp("wandb")
    stream = make_stream(tmp / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_DATA_DIR", str(tmp / "data"))  # where wandb stages an artifact's files
        exporter = WandbExporter(mode="offline", dir=str(tmp))
        report = export(exporter, stream, tmp / "adapted")
        log = read_finished_log(tmp, RUN_ID)
    (folder,) = (tmp / "wandb").glob(f"offline-run-*-{RUN_ID}")
    return stream, log, folder / "files", report


def value_of(row: dict[str, Any], key: str) -> dict[str, Any]:
    """A media value of a history row: wandb writes its fields as nested keys (``samples/_type``...)."""
    return {k[len(key) + 1 :]: v for k, v in row.items() if k.startswith(f"{key}/")}


def test_wandb_history_rows_reference_each_image_file_with_its_pixels(
    wandb_run: tuple[Stream, Any, Path, dict[str, Any]],
) -> None:
    stream, log, files, _ = wandb_run
    for step, caption in ((0, "pred=3 true=5"), (5, "pred=1")):
        value = value_of(log.history[step], "samples")
        assert (value["_type"], value["caption"]) == ("image-file", caption)
        data = (files / value["path"]).read_bytes()
        assert np.array_equal(pixels_of(data), stream.samples[step])
        assert value["sha256"] == media.store_file(stream.run_dir, data, "png")[1]
    depth = value_of(log.history[5], "depth")
    assert np.array_equal(pixels_of((files / depth["path"]).read_bytes()), stream.depth)


def test_wandb_gallery_is_a_list_of_images_under_one_key(
    wandb_run: tuple[Stream, Any, Path, dict[str, Any]],
) -> None:
    stream, log, files, _ = wandb_run
    value = value_of(log.history[10], "preds")
    assert (value["_type"], value["count"]) == ("images/separated", 3)
    assert value["captions"] == ["item 0", "item 1", "item 2"]
    decoded = [pixels_of((files / name).read_bytes()) for name in value["filenames"]]
    assert [d.tolist() for d in decoded] == [p.tolist() for p in stream.preds]


def test_wandb_text_audio_and_table_are_in_their_rows(
    wandb_run: tuple[Stream, Any, Path, dict[str, Any]],
) -> None:
    stream, log, files, _ = wandb_run
    text = value_of(log.history[2], "gen")
    assert text["_type"] == "html-file"
    assert (files / text["path"]).read_text(encoding="utf-8") == (
        "<pre>The quick brown fox &lt;b&gt;jumps&lt;/b&gt; | over é 🦊\nsecond line</pre>"
    )
    clip = value_of(log.history[3], "tts")
    assert (clip["_type"], clip["caption"]) == ("audio-file", "hello")
    assert (files / clip["path"]).read_bytes() == stream.wav
    table = value_of(log.history[10], "eval/predictions")
    assert (table["_type"], table["nrows"], table["ncols"]) == ("table-file", 3, 4)
    document = json.loads((files / table["path"]).read_text(encoding="utf-8"))
    assert document["columns"] == ["id", "text", "score", "img"]
    assert [row[:3] for row in document["data"]] == [
        [0, "a cat", 0.25],
        [1, "a | dog", pytest.approx(math.nan, nan_ok=True)],
        [2, "é\nnewline", -math.inf],
    ]


def test_wandb_table_image_cells_are_images_in_its_run_table_artifact(
    wandb_run: tuple[Stream, Any, Path, dict[str, Any]],
) -> None:
    _, log, _, _ = wandb_run
    (artifact,) = [a for a in log.artifacts if a.type == "run_table"]
    entries = {entry.path: entry for entry in artifact.manifest.contents}
    document = json.loads(Path(entries["eval/predictions.table.json"].local_path).read_text(encoding="utf-8"))
    cells = [row[3] for row in document["data"]]
    assert [cell["_type"] for cell in cells] == ["image-file"] * 3
    for cell, row in zip(cells, ROWS, strict=True):
        assert np.array_equal(pixels_of(Path(entries[cell["path"]].local_path).read_bytes()), row[3])


# ---------------------------------------------------------------------------------------------- Neptune
def html_rows(page: str) -> list[list[str]]:
    """The cells of an HTML table, row by row, unescaped (stdlib parser)."""
    from html.parser import HTMLParser

    rows: list[list[str]] = []

    class Cells(HTMLParser):
        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag == "tr":
                rows.append([])
            elif tag in ("td", "th"):
                rows[-1].append("")

        def handle_data(self, data: str) -> None:
            if rows and rows[-1]:
                rows[-1][-1] += data

    Cells().feed(page)
    return rows


@pytest.fixture(scope="module")
def neptune_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stream, Any, dict[str, Any]]:
    from runtel.exporters.neptune import NeptuneExporter
    from tests.readers.neptune_offline import offline_runs, read_run

    tmp = tmp_path_factory.mktemp("neptune")
    stream = make_stream(tmp / "run")
    exporter = NeptuneExporter(data_directory=str(tmp / ".neptune"))
    report = export(exporter, stream, tmp / "adapted")
    (directory,) = offline_runs(tmp / ".neptune")
    return stream, read_run(directory), report


def test_neptune_image_series_hold_the_pixels_and_captions_at_their_steps(
    neptune_run: tuple[Stream, Any, dict[str, Any]],
) -> None:
    stream, run, _ = neptune_run
    series = run.series["images/samples"]
    assert [(step, ts) for step, _, ts in series] == [(0, media.T0), (5, media.T0 + 5)]
    for step, value, _ in series:
        assert np.array_equal(pixels_of(base64.b64decode(value.data)), stream.samples[int(step)])
    assert [value.description for _, value, _ in series] == ["pred=3 true=5", "pred=1"]
    ((step, depth, _),) = run.series["images/depth"]
    assert np.array_equal(pixels_of(base64.b64decode(depth.data)), stream.depth)


def test_neptune_gallery_items_are_series_of_their_own(
    neptune_run: tuple[Stream, Any, dict[str, Any]],
) -> None:
    stream, run, report = neptune_run
    for index, expected in enumerate(stream.preds):
        ((step, value, _),) = run.series[f"images/preds/{index}"]
        assert step == 10 and np.array_equal(pixels_of(base64.b64decode(value.data)), expected)
    assert report["gallery_split"]["count"] == 1
    assert report["caption_left_out"]["examples"] == [
        {"name": "tts", "step": 3, "kind": "audio", "caption": "hello"}
    ]


def test_neptune_text_series_table_and_audio_files(neptune_run: tuple[Stream, Any, dict[str, Any]]) -> None:
    stream, run, _ = neptune_run
    assert run.series["text/gen"] == [(2, TEXT, media.T0 + 2)]
    clip = run.files["audio/tts/step_3"]
    assert Path(clip.file_path).read_bytes() == stream.wav
    page = run.files["tables/eval/predictions/step_10"]
    assert page.ext == "html"
    rows = html_rows((run.directory / "upload_path" / page.tmp_file_name).read_text(encoding="utf-8"))
    assert rows[0] == ["id", "text", "score", "img"]
    assert [row[:3] for row in rows[1:]] == [
        ["0", "a cat", "0.25"],
        ["1", "a | dog", "nan"],
        ["2", "é\nnewline", "-inf"],
    ]
    assert all(row[3].startswith("[image ") for row in rows[1:])


def test_neptune_text_over_its_series_limit_is_cut_and_kept_whole(tmp_path: Path) -> None:
    from runtel.exporters.neptune import NeptuneExporter
    from tests.readers.neptune_offline import offline_runs, read_run

    long_text = "word " * 500
    records: list[Record] = [
        RunStarted(RUN_ID, "long", "media", media.T0, {}),
        media.text(tmp_path / "run", "gen", 0, long_text),
        RunEnded("completed", media.T0 + 1),
    ]
    exporter = NeptuneExporter(data_directory=str(tmp_path / ".neptune"))
    adapter = Adapter("neptune", exporter.capabilities, tmp_path / "adapted")
    assert exporter.export(adapter.adapt(records)) is ExportResult.SUCCESS
    exporter.shutdown()
    (directory,) = offline_runs(tmp_path / ".neptune")
    run = read_run(directory)
    assert run.series["text/gen"] == [(0, long_text[:1000], media.T0)]
    (full,) = [f for path, f in run.files.items() if path.startswith("artifacts/runtel-media-gen-step0")]
    assert Path(full.file_path).read_text(encoding="utf-8") == long_text
    assert adapter.report()["text_truncated"]["count"] == 1


def test_every_record_backend_declares_every_media_kind() -> None:
    from runtel.exporters import mlflow, neptune, tensorboard, wandb

    for module in (mlflow, neptune, tensorboard, wandb):
        assert set(module.CAPABILITIES.media) == {"image", "table", "text", "audio"}


def test_a_gallery_cut_short_by_the_end_of_the_run_is_sent_with_what_came(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runtel.exporters.tensorboard import TensorBoardExporter

    arrays = [media.pixels(5, 5, seed) for seed in range(3)]
    items = media.gallery(tmp_path / "run", "preds", 4, arrays)[:2]  # a crash after the second item
    records: list[Record] = [
        RunStarted(RUN_ID, "short", "media", media.T0, {}),
        *items,
        RunEnded("crashed", media.T0 + 9),
    ]
    exporter = TensorBoardExporter(str(tmp_path / "runs"))
    assert exporter.export(Adapter("tensorboard", exporter.capabilities, tmp_path / "a").adapt(records)) is (
        ExportResult.SUCCESS
    )
    assert exporter.run_dir is not None
    accumulator = EventAccumulator(exporter.run_dir, size_guidance={"tensors": 0})
    accumulator.Reload()
    (event,) = accumulator.Tensors("preds")
    assert event.step == 4
    assert [pixels_of(p).tolist() for p in event.tensor_proto.string_val[2:]] == [
        a.tolist() for a in arrays[:2]
    ]


def test_wandb_limits_a_gallery_and_a_table_are_cut_to_are_reported_with_the_full_table_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtel.exporters.wandb import WandbExporter
    from tests.readers.wandb_log import read_finished_log

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    tile = media.pixels(2, 2)
    rows = [[i, i / 7] for i in range(10_001)]
    big_table = media.table(run_dir, "eval", 1, [("id", "int64"), ("score", "float64")], rows)
    records: list[Record] = [
        RunStarted(RUN_ID, "limits", "media", media.T0, {}),
        *media.gallery(run_dir, "tiles", 0, [tile] * 110),
        big_table,
        RunEnded("completed", media.T0 + 9),
    ]
    exporter = WandbExporter(mode="offline", dir=str(tmp_path))
    adapter = Adapter("wandb", exporter.capabilities, tmp_path / "adapted")
    assert exporter.export(adapter.adapt(records)) is ExportResult.SUCCESS
    log = read_finished_log(tmp_path, RUN_ID)
    assert value_of(log.history[0], "tiles")["count"] == 108
    assert value_of(log.history[1], "eval")["nrows"] == 10_000
    report = adapter.report()
    assert report["gallery_cut"]["count"] == 2
    (cut,) = report["table_cut"]["examples"]
    assert (cut["rows"], cut["sent"]) == (10_001, 10_000)
    (full,) = [a for a in log.artifacts if a.name == cut["full"]]
    (entry,) = full.manifest.contents
    assert entry.size == big_table.size


def test_wandb_gallery_of_text_is_a_list_and_of_audio_is_split_into_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtel.exporters.wandb import WandbExporter
    from tests.readers.wandb_log import read_finished_log

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    texts = [media.text(run_dir, "gen", 2, f"sample {i}", index=i, count=2) for i in range(2)]
    clips = [
        media.audio(
            run_dir, "tts", 2, media.tone(400 + 100 * i, 8000), 8000, index=i, count=2, caption=f"c{i}"
        )
        for i in range(2)
    ]
    records: list[Record] = [
        RunStarted(RUN_ID, "lists", "media", media.T0, {}),
        *texts,
        *clips,
        RunEnded("completed", media.T0 + 9),
    ]
    exporter = WandbExporter(mode="offline", dir=str(tmp_path))
    adapter = Adapter("wandb", exporter.capabilities, tmp_path / "adapted")
    assert exporter.export(adapter.adapt(records)) is ExportResult.SUCCESS
    log = read_finished_log(tmp_path, RUN_ID)
    (files,) = (tmp_path / "wandb").glob(f"offline-run-*-{RUN_ID}/files")
    row = log.history[2]
    text = value_of(row, "gen")
    assert (text["_type"], text["count"]) == ("html", 2)
    assert [(files / f["path"]).read_text(encoding="utf-8") for f in text["html"]] == [
        "<pre>sample 0</pre>",
        "<pre>sample 1</pre>",
    ]
    for i, clip in enumerate(clips):
        value = value_of(row, f"tts/{i}")
        assert (value["_type"], value["caption"]) == ("audio-file", f"c{i}")
        assert (files / value["path"]).read_bytes() == Path(clip.path).read_bytes()
    assert adapter.report()["gallery_split"]["examples"][0]["kind"] == "audio"


def test_mlflow_keeps_a_second_item_logged_under_one_key_at_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    import runtel
    from runtel.exporters.mlflow import MlflowExporter
    from runtel.replay import export_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first, second = media.pixels(6, 5, 1), media.pixels(6, 5, 2)
    with runtel.init(project="twice", base_dir=str(tmp_path / "runs")) as run:
        run.log({"img": runtel.Image(first)}, step=0)
        run.log_image("img", second, step=0)
        run.log_text("note", "one", step=0)
        run.log_text("note", "two", step=0)
    exporter = MlflowExporter(uri, "twice", artifact_location=str(tmp_path / "artifacts"))
    export_run(runtel.Store(tmp_path / "runs").run(run.id), exporter)
    client = MlflowClient(uri)
    run_id = exporter.mlflow_run_id
    assert run_id is not None
    images = _step_images(client, run_id, tmp_path / "dl")
    assert sorted(p.tobytes() for p in images["img", 0]) == sorted(p.tobytes() for p in (first, second))
    texts = [
        Path(client.download_artifacts(run_id, path, str(tmp_path / "t"))).read_text("utf-8")
        for path in ("media/note/step_0.txt", "media/note/step_0_2.txt")
    ]
    assert texts == ["one", "two"]


def test_wandb_gallery_still_incomplete_when_a_later_step_comes_is_logged_at_its_step_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from runtel.exporters.wandb import WandbExporter
    from tests.readers.wandb_log import read_finished_log

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run_dir = tmp_path / "run"
    tiles = [media.pixels(2, 2, seed) for seed in range(3)]
    records: list[Record] = [
        RunStarted(RUN_ID, "partial", "media", media.T0, {}),
        *media.gallery(run_dir, "tiles", 0, tiles)[:2],  # item 2 never came (its write was lost)
        media.image(run_dir, "later", 1, tiles[0]),
        RunEnded("completed", media.T0 + 9),
    ]
    exporter = WandbExporter(mode="offline", dir=str(tmp_path))
    with caplog.at_level("WARNING", logger="runtel"):
        assert exporter.export(records) is ExportResult.SUCCESS
    log = read_finished_log(tmp_path, RUN_ID)
    assert value_of(log.history[0], "tiles")["count"] == 2
    assert value_of(log.history[1], "later")["_type"] == "image-file"
    assert "'tiles' at step 0" in caplog.text and "items [2] missing" in caplog.text
