"""Logging images, tables, texts and audio: every accepted input comes back exactly from the store."""

from __future__ import annotations

import hashlib
import io
import math
import wave
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch
from PIL import Image as PILImage

import runtel

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Reopen = Callable[[runtel.Run], runtel.StoredRun]


@pytest.fixture
def stored(base_dir: Path) -> Reopen:
    """Finish ``run`` and open it from the store, as a reader would."""

    def reopen(run: runtel.Run) -> runtel.StoredRun:
        run.finish()
        return runtel.Store(base_dir).run(run.id)

    return reopen


def _rgb(seed: int = 0, shape: tuple[int, ...] = (16, 12, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_a_uint8_hwc_array_comes_back_pixel_for_pixel_as_png(run: runtel.Run, stored: Reopen) -> None:
    pixels = _rgb()
    run.log_image("samples", pixels, step=3, caption="pred=3 true=5")
    [(step, item)] = stored(run).media("samples")
    assert step == 3 and item.kind == "image" and item.caption == "pred=3 true=5"
    assert item.path.suffix == ".png" and item.path.name.startswith(item.sha256)
    np.testing.assert_array_equal(item.to_numpy(), pixels)
    assert item.to_numpy().dtype == np.uint8


def test_chw_and_hw_arrays_and_single_channel_keep_their_pixels(run: runtel.Run, stored: Reopen) -> None:
    chw = _rgb(1, (3, 10, 14))
    gray = _rgb(2, (9, 7))
    one_channel = _rgb(3, (5, 6, 1))
    run.log_image("chw", chw)
    run.log_image("gray", gray)
    run.log_image("one", one_channel)
    run_back = stored(run)
    np.testing.assert_array_equal(run_back.media("chw")[0][1].to_numpy(), chw.transpose(1, 2, 0))
    np.testing.assert_array_equal(run_back.media("gray")[0][1].to_numpy(), gray)
    np.testing.assert_array_equal(run_back.media("one")[0][1].to_numpy(), one_channel)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint16", "int32", "bool"])
def test_other_dtypes_keep_their_exact_array_beside_a_png_preview(
    run: runtel.Run, stored: Reopen, dtype: str
) -> None:
    values = np.random.default_rng(4).normal(size=(8, 6, 3)).astype(dtype)
    if dtype.startswith("float"):
        values[0, 0, 0], values[0, 1, 0], values[0, 2, 0] = np.nan, np.inf, -np.inf
    run.log_image("exact", values)
    [(_, item)] = stored(run).media("exact")
    back = item.to_numpy()
    assert back.dtype == values.dtype and item.meta["format"] == "npy"
    np.testing.assert_array_equal(back, values)
    assert item.preview is not None and item.preview.suffix == ".png"
    preview = np.array(PILImage.open(item.preview))
    assert preview.shape == values.shape and preview.dtype == np.uint8


def test_the_preview_rule_scales_unit_floats_by_255_and_other_ranges_by_min_max(
    run: runtel.Run, stored
) -> None:
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    wide = np.array([[-2.0, 0.0, 2.0]], np.float64)
    run.log_image("unit", unit)
    run.log_image("wide", wide)
    back = stored(run)
    unit_item = back.media("unit")[0][1]
    wide_item = back.media("wide")[0][1]
    assert unit_item.preview is not None and wide_item.preview is not None
    np.testing.assert_array_equal(np.array(PILImage.open(unit_item.preview)), [[0, 128, 255]])
    np.testing.assert_array_equal(np.array(PILImage.open(wide_item.preview)), [[0, 128, 255]])


def test_a_torch_tensor_is_read_chw_and_copied_at_the_call(run: runtel.Run, stored: Reopen) -> None:
    tensor = torch.from_numpy(_rgb(5, (3, 8, 8)).copy())
    expected = tensor.numpy().transpose(1, 2, 0).copy()
    run.log_image("t", tensor)
    tensor.zero_()  # the next step overwrites the batch: what was logged is kept
    [(_, item)] = stored(run).media("t")
    np.testing.assert_array_equal(item.to_numpy(), expected)


def test_a_bfloat16_tensor_is_stored_exactly_as_float32(run: runtel.Run, stored: Reopen) -> None:
    tensor = torch.linspace(0, 1, 48, dtype=torch.bfloat16).reshape(1, 6, 8)
    run.log_image("bf16", tensor)
    [(_, item)] = stored(run).media("bf16")
    assert item.meta["source_dtype"] == "bfloat16"
    np.testing.assert_array_equal(item.to_numpy(), tensor.float().numpy().transpose(1, 2, 0))


def test_a_numpy_array_overwritten_after_the_call_is_stored_as_it_was(
    run: runtel.Run, stored: Reopen
) -> None:
    pixels = _rgb(6)
    kept = pixels.copy()
    run.log({"batch": runtel.Image(pixels)})
    pixels[:] = 0
    np.testing.assert_array_equal(stored(run).media("batch")[0][1].to_numpy(), kept)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_a_pil_image_keeps_its_pixels(run: runtel.Run, stored: Reopen, mode: str) -> None:
    picture = PILImage.fromarray(_rgb(7, (10, 11, 4))).convert(mode)
    run.log_image("pil", picture)
    np.testing.assert_array_equal(stored(run).media("pil")[0][1].to_numpy(), np.array(picture))


def test_a_palette_pil_image_is_stored_as_its_rgb_pixels(run: runtel.Run, stored: Reopen) -> None:
    picture = PILImage.fromarray(_rgb(8, (6, 6, 3))).convert("P")
    run.log_image("palette", picture)
    np.testing.assert_array_equal(
        stored(run).media("palette")[0][1].to_numpy(), np.array(picture.convert("RGB"))
    )


def test_an_image_file_is_read_at_the_call(run: runtel.Run, stored: Reopen, tmp_path: Path) -> None:
    source = tmp_path / "sample.png"
    pixels = _rgb(9)
    PILImage.fromarray(pixels).save(source)
    run.log_image("file", source)
    PILImage.fromarray(np.zeros_like(pixels)).save(source)  # overwritten before the flush
    np.testing.assert_array_equal(stored(run).media("file")[0][1].to_numpy(), pixels)


def test_a_matplotlib_figure_is_rendered_at_the_call(run: runtel.Run, stored: Reopen) -> None:
    figure, axes = plt.subplots(figsize=(2, 1), dpi=50)
    axes.plot([0, 1], [1, 0])
    figure.canvas.draw()
    expected = np.array(figure.canvas.buffer_rgba())
    run.log_image("figure", figure)
    plt.close(figure)
    np.testing.assert_array_equal(stored(run).media("figure")[0][1].to_numpy(), expected)


def test_a_list_in_log_is_a_gallery_at_that_step_beside_the_scalars(run: runtel.Run, stored: Reopen) -> None:
    images = [_rgb(seed) for seed in range(3)]
    run.log({"loss": 0.5})
    run.log({"loss": 0.25, "preds": [runtel.Image(x, caption=f"#{i}") for i, x in enumerate(images)]})
    back = stored(run)
    gallery = back.media("preds")
    assert [step for step, _ in gallery] == [1, 1, 1]
    assert [(item.index, item.count, item.caption) for _, item in gallery] == [
        (0, 3, "#0"),
        (1, 3, "#1"),
        (2, 3, "#2"),
    ]
    for (_, item), expected in zip(gallery, images, strict=True):
        np.testing.assert_array_equal(item.to_numpy(), expected)
    steps, _, values = back.history("loss")
    assert steps.tolist() == [0, 1] and values.tolist() == [0.5, 0.25]
    assert "preds" not in back.metrics()


def test_log_image_without_a_step_takes_the_current_step(run: runtel.Run, stored: Reopen) -> None:
    for step in range(4):
        run.log({"loss": float(step)})
    run.log_image("now", _rgb())
    assert [step for step, _ in stored(run).media("now")] == [3]


def test_text_is_stored_as_utf8_byte_for_byte(run: runtel.Run, stored: Reopen) -> None:
    text = "The quick brown fox — 狐狸 🦊\n\ttab\x00nul"
    run.log_text("samples/generation", text, step=2)
    [(step, item)] = stored(run).media("samples/generation")
    assert step == 2 and item.text == text and item.path.read_bytes() == text.encode("utf-8")


def test_int16_audio_is_a_wav_with_the_exact_samples_and_rate(run: runtel.Run, stored: Reopen) -> None:
    waveform = np.random.default_rng(10).integers(-32768, 32767, (2205, 2), dtype=np.int16)
    run.log_audio("tts/sample", waveform, sample_rate=22050, caption="hello")
    [(_, item)] = stored(run).media("tts/sample")
    assert item.sample_rate == 22050 and item.caption == "hello" and item.path.suffix == ".wav"
    with wave.open(io.BytesIO(item.path.read_bytes())) as clip:
        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (22050, 2, 2)
        assert clip.readframes(clip.getnframes()) == waveform.astype("<i2").tobytes()
    np.testing.assert_array_equal(item.to_numpy(), waveform)


def test_float_audio_keeps_its_exact_array_and_gets_a_16_bit_wav_preview(
    run: runtel.Run, stored: Reopen
) -> None:
    waveform = np.sin(np.linspace(0, 100, 8000)).astype(np.float32) * 1.5
    run.log_audio("sine", waveform, sample_rate=8000)
    [(_, item)] = stored(run).media("sine")
    np.testing.assert_array_equal(item.to_numpy(), waveform)
    assert item.to_numpy().dtype == np.float32 and item.preview is not None
    with wave.open(str(item.preview)) as clip:
        samples = np.frombuffer(clip.readframes(clip.getnframes()), "<i2")
    np.testing.assert_array_equal(samples, np.rint(np.clip(waveform.astype(np.float64), -1, 1) * 32767))


def test_a_table_of_rows_keeps_types_and_every_cell(run: runtel.Run, stored: Reopen) -> None:
    rows = [
        [1, 0.5, "cat", True, None],
        [2, math.nan, "狐狸 🦊", False, "x"],
        [3, math.inf, "", True, None],
        [-(2**62), -math.inf, "tab\there", False, "y"],
    ]
    run.log_table("eval/predictions", rows, columns=["id", "score", "label", "ok", "note"])
    frame = stored(run).table("eval/predictions")
    assert list(frame.columns) == ["id", "score", "label", "ok", "note"]
    assert [str(t) for t in frame.dtypes] == ["int64", "float64", "object", "bool", "object"]
    assert frame["id"].tolist() == [1, 2, 3, -(2**62)]
    scores = frame["score"].tolist()
    assert scores[0] == 0.5 and math.isnan(scores[1]) and scores[2:] == [math.inf, -math.inf]
    assert frame["label"].tolist() == ["cat", "狐狸 🦊", "", "tab\there"]
    assert frame["ok"].tolist() == [True, False, True, False]
    assert frame["note"].tolist() == [None, "x", None, "y"]


def test_a_table_of_dicts_takes_its_columns_in_order_of_appearance(run: runtel.Run, stored: Reopen) -> None:
    run.log_table("dicts", [{"a": 1, "b": 0.1}, {"b": 0.2, "c": "z"}])
    frame = stored(run).table("dicts")
    assert list(frame.columns) == ["a", "b", "c"]
    assert frame["a"].tolist()[0] == 1 and pd.isna(frame["a"].tolist()[1])
    assert str(frame["a"].dtype) == "Int64"
    assert frame["b"].tolist() == [0.1, 0.2] and frame["c"].tolist() == [None, "z"]


def test_a_pandas_dataframe_keeps_its_column_dtypes_exactly(run: runtel.Run, stored: Reopen) -> None:
    source = pd.DataFrame(
        {
            "i8": np.array([1, -2, 3], np.int8),
            "u32": np.array([0, 2**32 - 1, 7], np.uint32),
            "f32": np.array([0.1, np.nan, np.inf], np.float32),
            "f64": [1 / 3, -0.0, 1e-310],
            "flag": [True, False, True],
            "text": ["a", None, "ü"],
        }
    )
    run.log_table("frame", source)
    frame = stored(run).table("frame")
    pd.testing.assert_frame_equal(frame, source)


def test_a_polars_dataframe_round_trips(run: runtel.Run, stored: Reopen) -> None:
    source = pl.DataFrame({"n": [1, 2, None], "x": [0.5, float("nan"), float("-inf")], "s": ["a", "b", None]})
    run.log_table("polars", source)
    run.log_table(
        "typed",
        pl.DataFrame(
            {
                "i8": pl.Series([1, -2], dtype=pl.Int8),
                "f32": pl.Series([0.5, 1.25], dtype=pl.Float32),
                "u64": pl.Series([0, 2**64 - 1], dtype=pl.UInt64),
                "b": [True, None],
            }
        ),
    )
    back = stored(run)
    frame = back.table("polars")
    assert [str(t) for t in frame.dtypes] == ["Int64", "float64", "object"]
    typed = back.table("typed")
    assert [str(t) for t in typed.dtypes] == ["int8", "float32", "uint64", "boolean"]
    assert typed["u64"].tolist() == [0, 2**64 - 1] and typed["f32"].tolist() == [0.5, 1.25]
    assert frame["n"].tolist()[:2] == [1, 2] and pd.isna(frame["n"].tolist()[2])
    x = frame["x"].tolist()
    assert x[0] == 0.5 and math.isnan(x[1]) and x[2] == -math.inf
    assert frame["s"].tolist() == ["a", "b", None]


def test_image_cells_of_a_table_come_back_as_media_items(run: runtel.Run, stored: Reopen) -> None:
    images = [_rgb(11), _rgb(12)]
    run.log_table(
        "with_images",
        [[runtel.Image(images[0], caption="a"), 1], [runtel.Image(images[1]), 2]],
        columns=["img", "n"],
    )
    frame = stored(run).table("with_images")
    cells = frame["img"].tolist()
    assert cells[0].caption == "a"
    for cell, expected in zip(cells, images, strict=True):
        np.testing.assert_array_equal(cell.to_numpy(), expected)
    assert frame["n"].tolist() == [1, 2]


def test_the_table_file_is_read_by_pandas_in_one_call(run: runtel.Run, stored: Reopen) -> None:
    run.log_table("plain", [[1, 0.25, "a"]], columns=["n", "x", "s"])
    [(_, item)] = stored(run).media("plain")
    frame = pd.read_json(item.path, orient="table", precise_float=True)
    assert frame.to_dict("records") == [{"n": 1, "x": 0.25, "s": "a"}]


def test_the_latest_table_or_the_one_at_a_step(run: runtel.Run, stored: Reopen) -> None:
    run.log_table("t", [[1]], columns=["v"], step=0)
    run.log_table("t", [[2]], columns=["v"], step=5)
    back = stored(run)
    assert back.table("t")["v"].tolist() == [2]
    assert back.table("t", step=0)["v"].tolist() == [1]
    with pytest.raises(KeyError, match="at step 3"):
        back.table("t", step=3)


def test_media_names_count_the_items_of_each_key(run: runtel.Run, stored: Reopen) -> None:
    run.log({"g": [runtel.Image(_rgb(s)) for s in range(2)], "note": runtel.Text("hi")})
    run.log({"g": [runtel.Image(_rgb(5))]})
    assert stored(run).media_names() == {"g": 3, "note": 1}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: runtel.Image("not/a/file.png"), "cannot be read"),
        (lambda: runtel.Image(np.zeros((0, 4, 3), np.uint8)), "empty"),
        (lambda: runtel.Image(np.zeros((6, 6, 5), np.uint8)), "1, 3 or 4 channels"),
        (lambda: runtel.Image(np.zeros((2, 4, 4, 3), np.uint8)), "gallery"),
        (lambda: runtel.Image(np.zeros((4, 4), complex)), "bool, integers or floats"),
        (lambda: runtel.Image([[1, 2]]), "numpy array, torch tensor"),
        (lambda: runtel.Image(np.zeros((2, 2)), caption=3), "caption must be a str"),
        (lambda: runtel.Audio(np.zeros(10), sample_rate=0), "from 1 to"),
        (lambda: runtel.Audio(np.zeros(10), sample_rate=44100.0), "must be an int"),
        (lambda: runtel.Audio(np.zeros((2, 2, 2)), sample_rate=8000), "1-D"),
        (lambda: runtel.Audio(np.array([np.nan]), sample_rate=8000), "NaN"),
        (lambda: runtel.Text(b"bytes"), "takes a str"),
        (lambda: runtel.Table([[1, 2]]), "needs columns"),
        (lambda: runtel.Table([[1, 2]], columns=["a"]), "row 0 has 2 cells"),
        (lambda: runtel.Table([[1, 2]], columns=["a", "a"]), "repeat"),
        (lambda: runtel.Table([[object()]], columns=["a"]), "a cell is a object"),
        (lambda: runtel.Table("text"), "takes a pandas"),
        (lambda: runtel.Table([], columns=[]), "no columns"),
    ],
)
def test_bad_input_is_a_clear_error_at_the_call(make: Callable[[], object], message: str) -> None:
    with pytest.raises(runtel.InvalidMediaError, match=message):
        make()


@pytest.mark.parametrize("name", ["../escape", "/abs", "a\\b", "", "x\x00y"])
def test_unsafe_media_names_are_refused(run: runtel.Run, name: str) -> None:
    with pytest.raises(runtel.InvalidNameError, match="media name"):
        run.log_image(name, _rgb())


def test_a_bad_media_value_in_log_records_nothing_of_the_call(run: runtel.Run, stored: Reopen) -> None:
    with pytest.raises(runtel.InvalidMediaError, match="one kind"):
        run.log({"loss": 1.0, "mixed": [runtel.Image(_rgb()), runtel.Text("x")]})
    back = stored(run)
    assert back.metrics() == [] and back.media_names() == {}


def test_a_name_is_either_a_metric_or_a_media_key(run: runtel.Run) -> None:
    run.log({"loss": 1.0})
    with pytest.raises(runtel.InvalidNameError, match="already a metric"):
        run.log_image("loss", _rgb())
    run.log_text("note", "x")
    with pytest.raises(runtel.InvalidNameError, match="already a media key"):
        run.log({"note": 2.0})


def test_media_after_finish_is_refused(base_dir: Path) -> None:
    run = runtel.init(project="p", base_dir=str(base_dir))
    run.finish()
    with pytest.raises(runtel.RunFinishedError):
        run.log_image("late", _rgb())
    with pytest.raises(runtel.RunFinishedError):
        run.log({"late": runtel.Text("x")})


def test_category_and_datetime_columns_keep_their_dtypes(run: runtel.Run, stored: Reopen) -> None:
    source = pd.DataFrame(
        {
            "kind": pd.Series(["cat", "dog", "cat"], dtype="category"),
            "when": pd.to_datetime(["2026-01-01 10:00:00", None, "2026-12-01 00:00:01.5"], format="ISO8601"),
            "maybe": pd.Series([1, None, 3], dtype="Int64"),
        }
    )
    run.log_table("typed", source)
    frame = stored(run).table("typed")
    assert [str(t) for t in frame.dtypes] == [str(t) for t in source.dtypes]
    pd.testing.assert_frame_equal(frame, source)


def test_a_float_image_cell_keeps_its_array_and_gets_a_preview(run: runtel.Run, stored: Reopen) -> None:
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    run.log_table("float-cells", [[runtel.Image(values)]], columns=["img"], step=4)
    [cell] = stored(run).table("float-cells")["img"].tolist()
    assert (cell.name, cell.step, cell.meta["format"]) == ("float-cells/img", 4, "npy")
    np.testing.assert_array_equal(cell.to_numpy(), values)
    assert cell.preview is not None and np.array(PILImage.open(cell.preview)).shape == (3, 4)


def test_a_polars_column_of_an_unsupported_dtype_is_refused() -> None:
    frame = pl.DataFrame({"l": [[1, 2]]})
    with pytest.raises(runtel.InvalidMediaError, match="polars dtype"):
        runtel.Table(frame)


def test_a_dataframe_with_integer_column_names_is_stored_with_them_as_text(
    run: runtel.Run, stored: Reopen
) -> None:
    source = pd.DataFrame([[1, "a"], [2, None]])
    run.log_table("numbered", source)
    frame = stored(run).table("numbered")
    pd.testing.assert_frame_equal(frame, source.rename(columns=str))


def test_big_endian_pcm_audio_is_stored_exactly(run: runtel.Run, stored: Reopen) -> None:
    waveform = np.array([0, 1, -2, 32767, -32768], dtype=">i2")
    run.log_audio("be", waveform, sample_rate=16000)
    [(_, item)] = stored(run).media("be")
    assert item.meta["format"] == "wav"
    np.testing.assert_array_equal(item.to_numpy(), waveform)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int8", "float64", "bool"])
def test_audio_of_every_dtype_comes_back_exactly(run: runtel.Run, stored: Reopen, dtype: str) -> None:
    waveform = (np.arange(-40, 40).reshape(40, 2) % 7).astype(dtype)
    run.log_audio("clip", waveform, sample_rate=48000)
    [(_, item)] = stored(run).media("clip")
    back = item.to_numpy()
    assert back.dtype == waveform.dtype and item.meta["channels"] == 2
    np.testing.assert_array_equal(back, waveform)
    assert item.meta["format"] == ("wav" if dtype in ("uint8", "int32") else "npy")


@pytest.mark.parametrize(
    "make",
    [
        lambda: runtel.Text("bad \udc80 surrogate"),
        lambda: runtel.Image(np.zeros((2, 2), np.uint8), caption="\udc80"),
        lambda: runtel.Table([["\udc80"]], columns=["a"]),
        lambda: runtel.Table([[2**63]], columns=["a"]),
    ],
)
def test_values_utf8_or_int64_cannot_hold_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(runtel.InvalidMediaError):
        make()


def test_a_dataframe_column_of_images_comes_back_as_media_items(run: runtel.Run, stored: Reopen) -> None:
    images = [_rgb(20), _rgb(21)]
    run.log_table("frame-images", pd.DataFrame({"img": [runtel.Image(x) for x in images], "n": [1, 2]}))
    frame = stored(run).table("frame-images")
    for cell, expected in zip(frame["img"].tolist(), images, strict=True):
        np.testing.assert_array_equal(cell.to_numpy(), expected)
    assert frame["n"].tolist() == [1, 2] and str(frame["n"].dtype) == "int64"


def test_an_object_column_of_images_and_nan_stores_nan_as_a_missing_image(
    run: runtel.Run, stored: Reopen
) -> None:
    image = _rgb(30)
    source = pd.DataFrame({"img": [runtel.Image(image), np.nan, None], "n": [1, 2, 3]})
    run.log_table("gaps", source)
    run.log_table("row-gaps", [[runtel.Image(image)], [float("nan")]], columns=["img"])
    back = stored(run)
    cells = back.table("gaps")["img"].tolist()
    np.testing.assert_array_equal(cells[0].to_numpy(), image)
    assert cells[1:] == [None, None]
    assert back.table("row-gaps")["img"].tolist()[1] is None


@pytest.mark.parametrize("other", ["text", 3, 0.5])
def test_a_column_mixing_images_with_other_values_is_refused_at_the_call(
    run: runtel.Run, other: object
) -> None:
    with pytest.raises(runtel.InvalidMediaError, match="mixes Image cells"):
        run.log_table("mixed", [[runtel.Image(_rgb())], [other]], columns=["img"])
    with pytest.raises(runtel.InvalidMediaError, match="mixes Image cells"):
        runtel.Table(pd.DataFrame({"img": [runtel.Image(_rgb()), other]}, dtype=object))


def test_a_pandas_string_column_with_a_missing_value_is_stored(run: runtel.Run, stored: Reopen) -> None:
    source = pd.DataFrame(
        {"s": pd.Series(["a", None, "c"], dtype="string"), "o": pd.Series(["x", pd.NA, "z"], dtype=object)}
    )
    run.log_table("strings", source)
    frame = stored(run).table("strings")
    assert str(frame["s"].dtype) == "string" and frame["s"].tolist()[::2] == ["a", "c"]
    assert frame["s"].isna().tolist() == [False, True, False]
    assert frame["o"].tolist() == ["x", None, "z"]


def test_a_torch_waveform_is_read_channels_first_as_torchaudio_lays_it_out(
    run: runtel.Run, stored: Reopen
) -> None:
    mono, stereo = torch.rand(1, 16000), torch.rand(2, 300)
    run.log_audio("mono", mono, 16000)
    run.log_audio("stereo", stereo, 8000)
    back = stored(run)
    [(_, clip)] = back.media("mono")
    assert (clip.meta["channels"], clip.meta["frames"]) == (1, 16000)
    np.testing.assert_array_equal(clip.to_numpy(), mono.numpy().T)
    np.testing.assert_array_equal(back.media("stereo")[0][1].to_numpy(), stereo.numpy().T)


@pytest.mark.parametrize("shape", [(1, 70000), (3, 16000)])
def test_a_numpy_waveform_with_more_channels_than_frames_is_refused_at_the_call(
    run: runtel.Run, shape: tuple[int, int]
) -> None:
    with pytest.raises(runtel.InvalidMediaError, match=r"waveform\.T"):
        run.log_audio("a", np.zeros(shape, np.float32), 16000)
    with pytest.raises(runtel.InvalidMediaError, match="channels"):
        run.log_audio("a", torch.zeros(70000, 1), 16000)


def test_a_table_column_its_meta_dtype_cannot_hold_is_a_store_corrupt_error(
    run: runtel.Run, stored: Reopen
) -> None:
    run.log_table("big", [[2**63 - 1]], columns=["n"])
    back = stored(run)
    [(_, item)] = back.media("big")
    crafted = item.read_bytes().replace(b"9223372036854775807", b"18446744073709551615")
    sha256 = hashlib.sha256(crafted).hexdigest()  # a crafted file whose record names its hash
    (item.path.parent / f"{sha256}.table.json").write_bytes(crafted)
    events = back.dir / "events.jsonl"
    events.write_text(events.read_text("utf-8").replace(item.sha256, sha256), "utf-8")
    with pytest.raises(runtel.StoreCorruptError, match="int64"):
        runtel.StoredRun(back.dir).table("big")


def test_a_categorical_keeps_its_category_order_and_ordered_flag(run: runtel.Run, stored: Reopen) -> None:
    sizes = pd.CategoricalDtype(["small", "medium", "large"], ordered=True)
    source = pd.DataFrame({"size": pd.Series(["large", "small", None], dtype=sizes)})
    run.log_table("sizes", source)
    frame = stored(run).table("sizes")
    assert frame["size"].cat.categories.tolist() == ["small", "medium", "large"]
    assert frame["size"].cat.ordered
    pd.testing.assert_frame_equal(frame, source)


def test_ints_beyond_2_53_in_a_column_with_floats_are_kept_exactly(run: runtel.Run, stored: Reopen) -> None:
    run.log_table("mixed", [[2**53 + 1], [0.5]], columns=["v"])
    assert stored(run).table("mixed")["v"].tolist() == [2**53 + 1, 0.5]


def test_a_tz_aware_datetime_column_is_read_by_pandas_in_one_call(run: runtel.Run, stored: Reopen) -> None:
    when = pd.to_datetime(["2026-01-01 10:00:00", "2026-06-01 00:00:00"]).tz_localize("Europe/Paris")
    source = pd.DataFrame({"when": when})
    run.log_table("zoned", source)
    back = stored(run)
    pd.testing.assert_frame_equal(back.table("zoned"), source)
    [(_, item)] = back.media("zoned")
    frame = pd.read_json(item.path, orient="table", precise_float=True)
    assert frame["when"].tolist() == source["when"].tolist()


def test_a_caption_over_10000_characters_is_refused_at_the_call(run: runtel.Run) -> None:
    runtel.Image(_rgb(), caption="x" * 10_000)
    with pytest.raises(runtel.InvalidMediaError, match="over 10000"):
        run.log_image("long", _rgb(), caption="x" * 10_001)


def test_a_name_of_a_refused_log_call_is_not_taken_as_a_media_key(run: runtel.Run, stored: Reopen) -> None:
    with pytest.raises(runtel.RuntelError):
        run.log({"m": runtel.Image(_rgb()), "bad": object()}, step=0)
    run.log({"m": 0.5}, step=1)  # "m" is still free to be a metric
    assert stored(run).last("m") == (0.5, 1)


def test_queued_bytes_count_text_as_utf8_and_a_tables_image_cells() -> None:
    from runtel._media_log import _nbytes

    assert _nbytes(runtel.Text("é" * 10)) == 20
    image = runtel.Image(_rgb(shape=(100, 100, 3)))
    plain = _nbytes(runtel.Table([[1]], columns=["n"]))
    assert _nbytes(runtel.Table([[image]], columns=["img"])) == plain + 30_000
    assert _nbytes(runtel.Table(pd.DataFrame({"img": [image]}))) == plain + 30_000
