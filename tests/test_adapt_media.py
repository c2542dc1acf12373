"""Media records fitted to a backend's limits by the one adaptation step: every change reported."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from runtel._adapt import Adapter
from runtel.exporters._media import read_table
from runtel.exporters.base import Capabilities
from runtel.records import ArtifactLogged, MediaLogged, Record
from tests import media_records as media


def adapter(tmp_path: Path, **caps: object) -> Adapter:
    return Adapter("backend", Capabilities(**caps), tmp_path / "adapted")  # type: ignore[arg-type]


def sent(out: list[Record]) -> list[MediaLogged]:
    return [r for r in out if isinstance(r, MediaLogged)]


def artifacts(out: list[Record]) -> list[ArtifactLogged]:
    return [r for r in out if isinstance(r, ArtifactLogged)]


def test_by_default_an_exporter_takes_every_media_kind_exactly(tmp_path: Path) -> None:
    assert Capabilities().media == ("image", "table", "text", "audio")
    record = media.float_image(tmp_path, "depth", 2, np.zeros((4, 4), dtype=np.float32))
    assert Adapter("any", Capabilities(), tmp_path).adapt([record]) == [record]


def test_a_record_that_fits_is_passed_on_as_the_same_object(tmp_path: Path) -> None:
    record = media.image(tmp_path, "samples", 3, media.pixels(8, 8))
    a = adapter(tmp_path)
    assert a.adapt([record]) == [record]
    assert a.adapt([record])[0] is record
    assert a.report() == {}


def test_exporters_that_declare_no_media_are_sent_none_and_it_is_reported(tmp_path: Path) -> None:
    a = Adapter("third-party", Capabilities(media=()), tmp_path)
    records = [
        media.image(tmp_path, "img", 0, media.pixels(4, 4)),
        media.text(tmp_path, "gen", 0, "hello"),
        media.text(tmp_path, "gen", 1, "again"),
    ]
    assert a.adapt(records) == []
    report = a.report()
    assert report["images_left_out"]["count"] == 1
    assert report["text_left_out"]["count"] == 2
    assert report["text_left_out"]["examples"][0] == {
        "name": "gen",
        "step": 0,
        "index": 0,
        "reason": "the backend takes no text media",
    }


def test_a_kind_the_backend_lacks_is_left_out_and_the_others_kept(tmp_path: Path) -> None:
    a = adapter(tmp_path, media=("image",))
    image = media.image(tmp_path, "img", 0, media.pixels(4, 4))
    clip = media.audio(tmp_path, "tts", 0, media.tone(100, 8000), 8000)
    assert a.adapt([image, clip]) == [image]
    assert a.report()["audio_left_out"]["count"] == 1


def test_a_float_image_reaches_an_8bit_backend_as_its_preview(tmp_path: Path) -> None:
    array = np.linspace(0, 1, 48, dtype=np.float32).reshape(4, 4, 3)
    record = media.float_image(tmp_path, "depth", 2, array, caption="d")
    a = adapter(tmp_path, exact_arrays=False)
    (out,) = sent(a.adapt([record]))
    assert out.path == record.preview and out.preview is None
    data = Path(out.path).read_bytes()
    assert out.sha256 == media.store_file(tmp_path, data, "png")[1] and out.size == len(data)
    assert out.meta["format"] == "png" and out.meta["dtype"] == "uint8"
    assert np.array_equal(media.decode_png(data), np.rint(array * 255).astype(np.uint8))
    assert (out.caption, out.step, out.name) == ("d", 2, "depth")
    assert a.report()["image_sent_as_8bit"] == {
        "count": 1,
        "examples": [{"name": "depth", "step": 2, "dtype": "float32", "sent_as": "uint8"}],
    }


def test_a_backend_that_takes_exact_arrays_gets_the_npy(tmp_path: Path) -> None:
    record = media.float_image(tmp_path, "depth", 2, np.zeros((4, 4), dtype=np.float32))
    a = adapter(tmp_path, exact_arrays=True)
    assert a.adapt([record]) == [record]
    assert a.report() == {}


def test_an_exact_array_without_its_preview_is_left_out_and_reported(tmp_path: Path) -> None:
    import dataclasses

    record = media.float_image(tmp_path, "depth", 2, np.zeros((4, 4), dtype=np.float32))
    a = adapter(tmp_path, exact_arrays=False)
    assert a.adapt([dataclasses.replace(record, preview=None)]) == []
    assert a.report()["images_left_out"]["examples"][0]["reason"] == "an exact array without its PNG preview"


def test_an_image_over_the_side_limit_is_scaled_down_keeping_its_aspect(tmp_path: Path) -> None:
    record = media.image(tmp_path, "big", 0, media.pixels(40, 100))
    a = adapter(tmp_path, max_image_side=50)
    (out,) = sent(a.adapt([record]))
    assert media.decode_png(Path(out.path).read_bytes()).shape == (20, 50, 3)
    assert out.meta["shape"] == [20, 50, 3]
    assert Path(out.path).is_relative_to(tmp_path / "adapted")
    assert a.report()["image_resized"]["examples"] == [
        {"name": "big", "step": 0, "size": [100, 40], "sent_as": [50, 20]}
    ]


def test_an_image_over_the_byte_limit_is_scaled_until_it_fits(tmp_path: Path) -> None:
    record = media.image(tmp_path, "noise", 0, media.pixels(200, 200))
    assert record.size > 100_000
    a = adapter(tmp_path, max_image_bytes=30_000)
    (out,) = sent(a.adapt([record]))
    assert out.size <= 30_000 == a._caps.max_image_bytes
    assert Path(out.path).stat().st_size == out.size
    assert a.report()["image_resized"]["count"] == 1


def test_a_gallery_over_the_item_limit_is_cut_and_the_rest_counted(tmp_path: Path) -> None:
    items = media.gallery(tmp_path, "preds", 4, [media.pixels(4, 4, seed) for seed in range(5)])
    a = adapter(tmp_path, max_gallery_items=3)
    out = sent(a.adapt(items))
    assert [(r.index, r.count, r.sha256) for r in out] == [(i, 3, items[i].sha256) for i in range(3)]
    assert a.report()["gallery_cut"] == {
        "count": 2,
        "examples": [{"name": "preds", "step": 4, "items": 5, "sent": 3}],
    }


def test_a_gallery_of_a_kind_without_galleries_is_split_into_single_items(tmp_path: Path) -> None:
    items = [media.text(tmp_path, "gen", 1, f"sample {i}", index=i, count=3) for i in range(3)]
    a = adapter(tmp_path, galleries=("image",), step_rule="strictly_increasing")
    out = sent(a.adapt(items))
    assert [(r.name, r.index, r.count, r.step) for r in out] == [(f"gen/{i}", 0, 1, 1) for i in range(3)]
    assert a.report()["gallery_split"]["examples"][0]["items"] == 3


def test_a_table_over_the_row_limit_is_cut_and_sent_whole_as_an_artifact(tmp_path: Path) -> None:
    rows = [[i, f"row {i}", i / 3] for i in range(25)]
    record = media.table(
        tmp_path, "eval", 7, [("id", "int64"), ("text", "object"), ("score", "float64")], rows
    )
    a = adapter(tmp_path, max_table_rows=10)
    out = a.adapt([record])
    (full,) = artifacts(out)
    (cut,) = sent(out)
    assert (full.path, full.sha256, full.size, full.step) == (record.path, record.sha256, record.size, 7)
    assert cut.meta["rows"] == 10 and cut.meta["columns"] == record.meta["columns"]
    document = json.loads(Path(cut.path).read_text())
    assert document["data"] == json.loads(Path(record.path).read_text())["data"][:10]
    import pandas as pd

    frame = pd.read_json(io.StringIO(Path(cut.path).read_text()), orient="table", precise_float=True)
    assert frame["id"].tolist() == list(range(10))
    assert a.report()["table_cut"]["examples"] == [
        {"name": "eval", "step": 7, "rows": 25, "sent": 10, "full": "runtel-media-eval-step7.table.json"}
    ]


def test_text_over_the_character_limit_is_cut_and_sent_whole_as_an_artifact(tmp_path: Path) -> None:
    content = "é" + "x" * 1500 + "\r\n"
    record = media.text(tmp_path, "gen", 0, content)
    a = adapter(tmp_path, max_text_chars=1000)
    out = a.adapt([record])
    (full,) = artifacts(out)
    (cut,) = sent(out)
    assert Path(cut.path).read_text(encoding="utf-8") == content[:1000]
    assert cut.meta["chars"] == 1000 and full.sha256 == record.sha256
    assert a.report()["text_truncated"]["examples"][0]["chars"] == len(content)


def test_audio_over_the_length_limit_is_cut_to_it(tmp_path: Path) -> None:
    samples = media.tone(3 * 8000, 8000, channels=2)
    record = media.audio(tmp_path, "tts", 0, samples, 8000)
    a = adapter(tmp_path, max_audio_seconds=1.0)
    out = a.adapt([record])
    (full,) = artifacts(out)
    (cut,) = sent(out)
    with wave.open(cut.path, "rb") as clip:
        assert (clip.getnframes(), clip.getnchannels(), clip.getframerate()) == (8000, 2, 8000)
        frames = np.frombuffer(clip.readframes(8000), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(frames, samples[:8000]) and cut.meta["frames"] == 8000
    assert full.sha256 == record.sha256
    example = a.report()["audio_cut"]["examples"][0]
    assert (example["seconds"], example["sent_seconds"]) == (3.0, 1.0)


def test_without_artifacts_the_report_says_where_the_full_file_is(tmp_path: Path) -> None:
    record = media.text(tmp_path, "gen", 0, "y" * 20)
    a = adapter(tmp_path, max_text_chars=5, artifacts=False)
    out = a.adapt([record])
    assert artifacts(out) == []
    assert a.report()["text_truncated"]["examples"][0]["full"] == f"in the local store only: {record.path}"


def test_the_full_file_artifact_gets_the_backends_artifact_name_rules(tmp_path: Path) -> None:
    record = media.text(tmp_path, "gen/samples?", 3, "y" * 20)
    a = adapter(tmp_path, max_text_chars=5, artifact_name_pattern=r"[A-Za-z0-9_.\-]{1,128}")
    (full,) = artifacts(a.adapt([record]))
    assert full.name == "runtel-media-gen_samples_-step3.txt"


def test_a_gallerys_items_share_one_step_under_a_strict_step_rule(tmp_path: Path) -> None:
    a = adapter(tmp_path, step_rule="strictly_increasing")
    single = media.image(tmp_path, "preds", 5, media.pixels(4, 4))
    items = media.gallery(tmp_path, "preds", 5, [media.pixels(4, 4, s) for s in range(3)])
    later = media.image(tmp_path, "preds", 6, media.pixels(4, 4))
    out = sent(a.adapt([single, *items, later]))
    assert [r.step for r in out] == [5, 6, 6, 6, 7]
    assert a.report()["step_moved"]["count"] == 2  # the gallery once, and the image it pushed on


def test_a_media_series_going_back_is_shifted_forward(tmp_path: Path) -> None:
    a = adapter(tmp_path, step_rule="strictly_increasing")
    steps = [sent(a.adapt([media.text(tmp_path, "gen", s, f"t{s}")]))[0].step for s in (0, 1, 2, 1, 2)]
    assert steps == [0, 1, 2, 3, 4]
    assert a.report()["step_shifted"]["count"] == 2


def test_a_media_name_the_backend_refuses_is_renamed_and_reported(tmp_path: Path) -> None:
    a = adapter(tmp_path, key_pattern=r"[\w./-]+")
    (out,) = sent(a.adapt([media.text(tmp_path, "gen?[0]", 0, "t")]))
    assert out.name == "gen__0"
    assert a.report()["key_renamed"]["examples"][0]["kind"] == "media"


@pytest.mark.parametrize("kind", ["text_truncated", "table_cut"])
def test_a_cut_file_is_written_once_for_a_retried_batch(tmp_path: Path, kind: str) -> None:
    if kind == "table_cut":
        record = media.table(tmp_path, "t", 0, [("a", "int64")], [[i] for i in range(5)])
        a = adapter(tmp_path, max_table_rows=2)
    else:
        record = media.text(tmp_path, "t", 0, "abcdef")
        a = adapter(tmp_path, max_text_chars=2)
    first, second = sent(a.adapt([record]))[0], sent(a.adapt([record]))[0]
    assert (first.path, first.sha256) == (second.path, second.sha256)
    assert a.report()[kind]["count"] == 2


def test_a_caption_the_backend_has_no_place_for_is_left_out_and_reported(tmp_path: Path) -> None:
    a = adapter(tmp_path, captions=("image",))
    image = media.image(tmp_path, "img", 0, media.pixels(4, 4), caption="kept")
    text = media.text(tmp_path, "gen", 0, "t", caption="a prompt")
    out = sent(a.adapt([image, text]))
    assert [r.caption for r in out] == ["kept", None]
    assert a.report()["caption_left_out"]["examples"] == [
        {"name": "gen", "step": 0, "kind": "text", "caption": "a prompt"}
    ]


@pytest.mark.parametrize("stored_preview", [True, False], ids=["stored preview", "cell without one"])
def test_exact_image_cells_reach_an_8bit_backend_as_previews(tmp_path: Path, stored_preview: bool) -> None:
    depth = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rows = [[depth], [media.pixels(2, 2)]]
    record = media.table(tmp_path / "run", "eval", 1, [("img", "image")], rows, cell_previews=stored_preview)
    a = adapter(tmp_path, exact_arrays=False)
    (out,) = sent(a.adapt([record]))
    document = json.loads(Path(out.path).read_text())
    first, second = (row["img"] for row in document["data"])
    root = Path(out.path).parent.parent
    assert first["format"] == "png" and first["caption"] == "cell img"
    assert np.array_equal(
        media.decode_png((root / first["image"]).read_bytes()), np.rint(depth * 255).astype(np.uint8)
    )
    assert np.array_equal(media.decode_png((root / second["image"]).read_bytes()), media.pixels(2, 2))
    assert a.report()["image_sent_as_8bit"]["examples"] == [
        {"name": "eval", "step": 1, "column": "img", "dtype": "float32", "sent_as": "uint8"}
    ]


def test_an_image_column_with_gaps_is_sent_as_text_where_the_backend_needs_it_full(tmp_path: Path) -> None:
    record = media.table(
        tmp_path / "run", "eval", 1, [("id", "int64"), ("img", "image")], [[0, None], [1, media.pixels(2, 2)]]
    )
    a = adapter(tmp_path, table_image_gaps=False)
    (out,) = sent(a.adapt([record]))
    document = json.loads(Path(out.path).read_text())
    original = json.loads(Path(record.path).read_text())
    assert [row["img"] for row in document["data"]] == [None, original["data"][1]["img"]["image"]]
    assert out.meta["columns"] == [{"name": "id", "dtype": "int64"}, {"name": "img", "dtype": "object"}]
    assert a.report()["table_images_as_text"]["examples"] == [
        {"name": "eval", "step": 1, "column": "img", "empty_cells": 1}
    ]


def test_infinite_cells_are_sent_empty_where_the_backend_writes_them_so(tmp_path: Path) -> None:
    import math

    record = media.table(
        tmp_path, "eval", 1, [("x", "float64")], [[math.inf], [-math.inf], [math.nan], [1.5]]
    )
    a = adapter(tmp_path, table_infinity=False)
    out = a.adapt([record])
    (full,) = artifacts(out)
    (cut,) = sent(out)
    cells = [row["x"] for row in json.loads(Path(cut.path).read_text())["data"]]
    assert cells[:2] == [None, None] and math.isnan(cells[2]) and cells[3] == 1.5
    assert full.sha256 == record.sha256
    assert a.report()["table_infinity_as_null"]["count"] == 2


def test_a_table_cell_naming_a_file_outside_the_run_folder_is_refused(tmp_path: Path) -> None:
    from runtel.errors import RuntelError

    record = media.table(tmp_path / "run", "eval", 1, [("img", "image")], [[media.pixels(2, 2)]] * 2)
    document = json.loads(Path(record.path).read_text())
    document["data"][0]["img"]["image"] = "../../etc/passwd"
    Path(record.path).write_text(json.dumps(document))
    with pytest.raises(RuntelError, match="outside the run folder"):
        adapter(tmp_path, max_table_rows=1).adapt([record])
    with pytest.raises(RuntelError, match="outside the run folder"):
        read_table(record)


def test_a_table_changed_twice_sends_its_stored_file_once_as_the_full_table(tmp_path: Path) -> None:
    import math

    rows = [[math.inf], [1.0], [2.0]]
    record = media.table(tmp_path, "eval", 1, [("x", "float64")], rows)
    a = adapter(tmp_path, max_table_rows=2, table_infinity=False)
    out = a.adapt([record])
    (full,) = artifacts(out)
    (sent_table,) = sent(out)
    assert (full.path, full.sha256) == (record.path, record.sha256)
    assert [row["x"] for row in json.loads(Path(sent_table.path).read_text())["data"]] == [None, 1.0]
    report = a.report()
    assert (
        report["table_cut"]["examples"][0]["full"] == report["table_infinity_as_null"]["examples"][0]["full"]
    )


def test_a_column_named_index_is_read_like_any_other(tmp_path: Path) -> None:
    record = media.table(tmp_path, "t", 0, [("index", "int64"), ("v", "object")], [[7, "a"], [8, "b"]])
    table = read_table(record)
    assert (table.columns, table.rows) == (["index", "v"], [[7, "a"], [8, "b"]])


def test_image_columns_are_sent_as_text_and_reported_where_the_backend_tables_hold_no_images(
    tmp_path: Path,
) -> None:
    from runtel.exporters.neptune import CAPABILITIES as NEPTUNE
    from runtel.exporters.tensorboard import CAPABILITIES as TENSORBOARD

    record = media.table(tmp_path / "run", "eval", 1, [("img", "image")], [[media.pixels(2, 2)]])
    file_name = Path(json.loads(Path(record.path).read_text())["data"][0]["img"]["image"]).name
    for backend, caps in (("tensorboard", TENSORBOARD), ("neptune", NEPTUNE)):
        a = Adapter(backend, caps, tmp_path / backend)
        (out,) = sent(a.adapt([record]))
        document = json.loads(Path(out.path).read_text())
        assert [row["img"] for row in document["data"]] == [f"[image {file_name}] cell img"]
        assert a.report()["table_images_as_text"]["examples"] == [
            {"name": "eval", "step": 1, "column": "img", "empty_cells": 0}
        ]


def test_a_table_cells_preview_changed_on_disk_is_not_sent(tmp_path: Path) -> None:
    from runtel.errors import StoreCorruptError

    depth = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    record = media.table(tmp_path / "run", "eval", 1, [("img", "image")], [[depth]], cell_previews=True)
    cell = json.loads(Path(record.path).read_text())["data"][0]["img"]
    preview = tmp_path / "run" / cell["preview"]
    preview.write_bytes(media.png_bytes(np.zeros((3, 4), np.uint8)))
    with pytest.raises(StoreCorruptError, match="'img'") as caught:
        adapter(tmp_path, exact_arrays=False).adapt([record])
    assert caught.value.path == str(preview)
