"""What the UI's media section reads from the store, without a browser: the index of figures, media and
histograms per run, the nearest step, distributions and heatmaps, tables by page, damaged logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.errors import MissingExtraError, StoreCorruptError
from runtel.records import HistogramLogged
from runtel.store.query import StoredRun
from runtel.ui import media_data, media_tables


def _figure(value: float) -> object:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.add_subplot().plot([0, 1], [0, value])
    return figure


def _histogram(step: int, edges: list[float], counts: list[int]) -> HistogramLogged:
    return HistogramLogged(
        name="w",
        step=step,
        time=0.0,
        bin_edges=np.asarray(edges, dtype=np.float64),
        counts=np.asarray(counts, dtype=np.int64),
        min=edges[0],
        max=edges[-1],
        mean=0.0,
        std=0.0,
        count=int(sum(counts)),
    )


@pytest.fixture
def figures_run(base_dir: Path) -> StoredRun:
    with runtel.init(project="p", name="figs", base_dir=str(base_dir)) as run:
        for step in (0, 10, 20):
            run.log_figure(_figure(step), "curves/roc", step=step)
            run.log_histogram("weights", np.arange(100.0) + step, step=step, bins=10)
    return runtel.Store(base_dir).run(run.id)


def test_figures_are_indexed_by_step_with_their_files_inside_the_run(figures_run: StoredRun) -> None:
    index = media_data.run_media(figures_run)
    track = index.tracks["figure:curves/roc"]
    assert track.steps.tolist() == [0, 10, 20]
    files = [track.items[step][0].file for step in (0, 10, 20)]
    assert files == [f"plots/curves/roc_step{step}.png" for step in (0, 10, 20)]
    assert index.files == frozenset(files)
    assert media_data.listed_file(figures_run, files[1]) == (figures_run.dir / files[1]).resolve()
    assert index.notes == ()


def test_histograms_are_kept_in_step_order(figures_run: StoredRun) -> None:
    histograms = media_data.run_media(figures_run).histograms["weights"]
    assert [h.step for h in histograms] == [0, 10, 20]
    assert media_data.track_keys([figures_run]) == [
        ("figure:curves/roc", "figure", "curves/roc"),
        ("histogram:weights", "histogram", "weights"),
    ]


def test_a_file_no_record_lists_is_not_servable(figures_run: StoredRun) -> None:
    assert media_data.listed_file(figures_run, "metadata.json") is None
    assert media_data.listed_file(figures_run, "plots/../metadata.json") is None
    assert media_data.listed_file(figures_run, "plots/curves/roc_step5.png") is None


def test_the_index_is_read_again_only_when_the_log_changes(base_dir: Path) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir)) as run:
        run.log_histogram("h", [1.0, 2.0], step=0)
        run.flush()
        stored = runtel.Store(base_dir).run(run.id)
        first = media_data.run_media(stored)
        assert media_data.run_media(stored) is first
        run.log_histogram("h", [3.0, 4.0], step=1)
        run.flush()
        assert [h.step for h in media_data.run_media(stored).histograms["h"]] == [0, 1]


def test_percentiles_are_interpolated_inside_the_bins() -> None:
    # 1 value in [0, 1), none in [1, 2), 3 in [2, 4]: spread evenly inside their bin.
    steps, bands = media_data.distribution([_histogram(7, [0, 1, 2, 4], [1, 0, 3])])
    assert steps.tolist() == [7]
    expected = {0.0: 0.0, 15.87: 0.6348, 50.0: 2 + 2 / 3, 84.13: 2 + 2 * (3.3652 - 1) / 3, 100.0: 4.0}
    for percentile, value in expected.items():
        assert bands[0, media_data.PERCENTILES.index(percentile)] == pytest.approx(value)


def test_empty_bins_at_the_ends_do_not_widen_the_outer_band() -> None:
    _, bands = media_data.distribution([_histogram(0, [0, 1, 2, 3, 4], [0, 2, 2, 0])])
    assert bands[0, 0] == 1.0 and bands[0, -1] == 3.0 and bands[0, 4] == 2.0


def test_a_step_without_finite_values_has_no_band() -> None:
    steps, bands = media_data.distribution([_histogram(0, [0, 1], [0]), _histogram(1, [0, 1], [4])])
    assert steps.tolist() == [1] and bands.shape == (1, 9)


def test_percentiles_of_logged_histograms_match_numpy_within_a_bin(figures_run: StoredRun) -> None:
    histograms = media_data.run_media(figures_run).histograms["weights"]
    steps, bands = media_data.distribution(histograms)
    assert steps.tolist() == [0, 10, 20]
    for row, step in zip(bands, steps.tolist(), strict=True):
        exact = np.percentile(np.arange(100.0) + step, media_data.PERCENTILES)
        assert np.all(np.abs(row - exact) <= 9.9 + 1e-9)  # one bin is 99 / 10 wide


def test_heatmap_shares_of_each_step_sum_to_one(figures_run: StoredRun) -> None:
    histograms = media_data.run_media(figures_run).histograms["weights"]
    steps, centres, shares = media_data.heatmap(histograms, rows=30)
    assert steps.tolist() == [0, 10, 20] and centres.size == 30 and shares.shape == (30, 3)
    assert np.allclose(shares.sum(axis=0), 1.0)
    half = (centres[1] - centres[0]) / 2
    assert (centres[0] - half, centres[-1] + half) == pytest.approx((0.0, 119.0))  # every step's range
    assert shares[centres > 100, 0].sum() == 0.0  # step 0 holds nothing above 99


@pytest.mark.parametrize(
    ("wanted", "nearest"), [(-5, 0), (0, 0), (4, 0), (5, 0), (6, 10), (15, 10), (20, 10), (21, 30), (99, 30)]
)
def test_nearest_step_prefers_the_earlier_on_a_tie(wanted: int, nearest: int) -> None:
    assert media_data.nearest_step(np.array([0, 10, 30]), wanted) == nearest


def test_nearest_step_of_nothing_is_none() -> None:
    assert media_data.nearest_step(np.zeros(0, dtype=np.int64), 3) is None


def test_a_damaged_log_is_a_note_and_other_runs_still_show(base_dir: Path, figures_run: StoredRun) -> None:
    with runtel.init(project="p", name="broken", base_dir=str(base_dir)) as run:
        run.log({"loss": 1.0})
    broken = runtel.Store(base_dir).run(run.id)
    with (broken.dir / "events.jsonl").open("a") as handle:
        handle.write('{"type": "figure", "name": 5}\n')
    index = media_data.run_media(broken)
    assert index.tracks == {} and len(index.notes) == 1 and "line" in index.notes[0]
    assert [key for key, _, _ in media_data.track_keys([broken, figures_run])] == [
        "figure:curves/roc",
        "histogram:weights",
    ]


def test_a_record_naming_a_file_outside_the_run_is_left_out_with_a_note(
    base_dir: Path, figures_run: StoredRun
) -> None:
    outside = base_dir / "secret" / "plots"
    outside.mkdir(parents=True)
    (outside / "a.png").write_bytes(b"not yours")
    line = {"type": "figure", "name": "stolen", "path": "../secret/plots/a.png", "step": 1, "time": 0.0}
    with (figures_run.dir / "events.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    index = media_data.run_media(figures_run)
    assert "figure:stolen" not in index.tracks
    problem = f"'../secret/plots/a.png' leads outside the run folder {figures_run.dir}"
    assert index.notes == (f"stolen: events.jsonl field 'path' {problem}",)
    assert index.tracks["figure:curves/roc"].steps.tolist() == [0, 10, 20]  # the rest still shows
    assert media_data.listed_file(figures_run, "../secret/plots/a.png") is None


def test_keys_from_the_browser_are_parsed_or_refused() -> None:
    assert media_data.split_key("image:samples/val") == ("image", "samples/val")
    assert media_data.split_key("figure:a:b") == ("figure", "a:b")
    for bad in ("video:x", "image:", "image", 5, None, ["image:x"]):
        assert media_data.split_key(bad) is None


def test_non_finite_cells_reach_the_grid_as_words() -> None:
    cells = [float("nan"), float("inf"), -float("inf"), np.float32(1.5), np.int64(3), None, (1, 2)]
    shown = [media_tables.cell_value(cell) for cell in cells]
    assert shown == ["NaN", "inf", "-inf", 1.5, 3, None, "(1, 2)"]


# ---- media logged through the real API


def _pixels(value: int, shape: tuple[int, ...] = (4, 6, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


@pytest.fixture
def media_runs(base_dir: Path) -> list[StoredRun]:
    """Two runs logging ``samples`` at different steps, one also a gallery, text, audio and a table."""
    ids = []
    with runtel.init(project="p", name="first", base_dir=str(base_dir)) as run:
        for step in (0, 10, 20):
            run.log({"loss": 1.0, "samples": runtel.Image(_pixels(step), caption=f"step {step}")}, step=step)
        run.log_image("grid", [_pixels(1), _pixels(2), _pixels(3)], step=5)
        run.log_image("exact", np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), step=5)
        run.log_text("story", "é" * 30, step=5)
        run.log_audio("tone", np.sin(np.arange(800) / 10).astype(np.float32), sample_rate=8000, step=5)
        rows = [{"i": i, "score": float("nan") if i == 3 else i / 10, "name": f"r{i:02d}"} for i in range(45)]
        run.log_table("eval", rows, step=5)
        ids.append(run.id)
    with runtel.init(project="p", name="second", base_dir=str(base_dir)) as run:
        for step in (4, 16):
            run.log_image("samples", _pixels(100 + step), step=step)
        ids.append(run.id)
    store = runtel.Store(base_dir)
    return [store.run(run_id) for run_id in ids]


def test_media_keys_of_both_runs_by_kind(media_runs: list[StoredRun]) -> None:
    assert media_data.track_keys(media_runs) == [
        ("image:samples", "image", "samples"),
        ("image:grid", "image", "grid"),
        ("image:exact", "image", "exact"),
        ("audio:tone", "audio", "tone"),
        ("text:story", "text", "story"),
        ("table:eval", "table", "eval"),
    ]
    indexes = [media_data.run_media(run) for run in media_runs]
    assert media_data.union_steps(indexes, "image:samples") == [0, 4, 10, 16, 20]


def test_each_run_shows_its_nearest_step_to_the_slider(media_runs: list[StoredRun]) -> None:
    first, second = (media_data.run_media(run) for run in media_runs)
    shown = {
        wanted: (
            media_data.items_at(first, "image:samples", wanted)[0],
            media_data.items_at(second, "image:samples", wanted)[0],
        )
        for wanted in (0, 4, 10, 16, 20)
    }
    assert shown == {0: (0, 4), 4: (0, 4), 10: (10, 4), 16: (20, 16), 20: (20, 16)}
    _, (item,) = media_data.items_at(first, "image:samples", 10)
    assert item.caption == "step 10" and item.file.startswith("media/") and item.file.endswith(".png")
    pixels = runtel.Store(media_runs[0].dir.parent).run(media_runs[0].id).media("samples")[1][1].to_numpy()
    assert np.array_equal(pixels, _pixels(10))  # the item at step 10 is the logged one
    assert (media_runs[0].dir / item.file).read_bytes() == media_runs[0].media("samples")[1][1].read_bytes()


def test_a_gallery_keeps_its_order(media_runs: list[StoredRun]) -> None:
    _, items = media_data.items_at(media_data.run_media(media_runs[0]), "image:grid", 5)
    assert [(item.index, item.count) for item in items] == [(0, 3), (1, 3), (2, 3)]
    stored = [item.path.relative_to(media_runs[0].dir).as_posix() for _, item in media_runs[0].media("grid")]
    assert [item.file for item in items] == stored


def test_an_exact_array_is_shown_by_its_preview_and_both_files_are_listed(
    media_runs: list[StoredRun],
) -> None:
    index = media_data.run_media(media_runs[0])
    _, (item,) = media_data.items_at(index, "image:exact", 5)
    ((_, stored),) = media_runs[0].media("exact")
    assert stored.preview is not None
    assert item.file == stored.preview.relative_to(media_runs[0].dir).as_posix()
    assert stored.path.relative_to(media_runs[0].dir).as_posix() in index.files
    assert media_data.describe(item) == "3x4 float32"


def test_audio_of_a_float_waveform_plays_its_wav_preview(media_runs: list[StoredRun]) -> None:
    _, (item,) = media_data.items_at(media_data.run_media(media_runs[0]), "audio:tone", 5)
    assert item.file.endswith(".wav") and media_data.describe(item) == "0.10 s at 8,000 Hz"


def test_text_is_read_whole_or_cut_at_the_limit(media_runs: list[StoredRun]) -> None:
    _, (item,) = media_data.items_at(media_data.run_media(media_runs[0]), "text:story", 5)
    assert media_data.read_text(media_runs[0], item) == ("é" * 30, False)
    assert media_data.read_text(media_runs[0], item, limit=7) == ("é" * 7, True)


def _table(run: StoredRun) -> media_data.Item:
    _, (item,) = media_data.items_at(media_data.run_media(run), "table:eval", 5)
    return item


def test_a_table_pages_on_the_server(media_runs: list[StoredRun]) -> None:
    item = _table(media_runs[0])
    rows, pages = media_tables.page(media_runs[0], item, 1, [])
    assert pages == 3 and [row["c0"] for row in rows] == list(range(20, 40))
    last, _ = media_tables.page(media_runs[0], item, 2, [])
    assert [row["c2"] for row in last] == [f"r{i:02d}" for i in range(40, 45)]
    first, _ = media_tables.page(media_runs[0], item, 0, [])
    assert first[3] == {"c0": 3, "c1": "NaN", "c2": "r03"}
    assert media_tables.columns(media_runs[0], item) == [
        {"name": "i", "id": "c0"},
        {"name": "score", "id": "c1"},
        {"name": "name", "id": "c2"},
    ]


def test_a_table_sorts_on_the_server_with_nan_last(media_runs: list[StoredRun]) -> None:
    item = _table(media_runs[0])
    rows, _ = media_tables.page(media_runs[0], item, 0, [{"column_id": "c1", "direction": "desc"}])
    assert [row["c0"] for row in rows[:3]] == [44, 43, 42]
    last, _ = media_tables.page(media_runs[0], item, 2, [{"column_id": "c1", "direction": "desc"}])
    assert last[-1] == {"c0": 3, "c1": "NaN", "c2": "r03"}


@pytest.mark.parametrize("sort_by", [[{"column_id": "c9"}], [{"column_id": "x1"}], "c1", [5]])
def test_a_sort_the_table_has_no_column_for_keeps_the_logged_order(
    media_runs: list[StoredRun], sort_by: object
) -> None:
    rows, _ = media_tables.page(media_runs[0], _table(media_runs[0]), 0, sort_by)
    assert [row["c0"] for row in rows] == list(range(20))


@pytest.mark.parametrize("number", [99, -1, "2", None])
def test_a_page_out_of_range_is_the_nearest_page(media_runs: list[StoredRun], number: object) -> None:
    rows, _ = media_tables.page(media_runs[0], _table(media_runs[0]), number, [])
    assert rows[0]["c0"] == (40 if number == 99 else 0)


def test_image_cells_link_to_the_route_only_for_their_table(base_dir: Path) -> None:
    with runtel.init(project="p", name="cells", base_dir=str(base_dir)) as run:
        run.log_table(
            "preds", [[runtel.Image(_pixels(7)), 0.5], [None, 0.25]], columns=["image", "p"], step=2
        )
    stored = runtel.Store(base_dir).run(run.id)
    _, (item,) = media_data.items_at(media_data.run_media(stored), "table:preds", 2)
    rows, _ = media_tables.page(stored, item, 0, [])
    cell = media_tables.load(stored, item).frame["image"][0]
    relative = cell.path.relative_to(stored.dir).as_posix()
    expected_url = f"{media_data.media_url(stored.id, relative)}?table={item.file}"
    assert rows == [{"c0": f"![image]({expected_url})", "c1": 0.5}, {"c0": "", "c1": 0.25}]
    assert media_tables.columns(stored, item)[0] == {"name": "image", "id": "c0", "presentation": "markdown"}
    assert media_tables.cell_file(stored, item.file, relative) == (stored.dir / relative).resolve()
    assert media_data.listed_file(stored, relative) is None  # a cell is listed by its table alone
    assert media_tables.cell_file(stored, item.file, "metadata.json") is None
    assert media_tables.cell_file(stored, "metadata.json", relative) is None


def _one_table(base_dir: Path) -> tuple[StoredRun, media_data.Item]:
    with runtel.init(project="p", name="table", base_dir=str(base_dir)) as run:
        run.log_table("t", [[1, "a"], [2, "b"]], columns=["n", "s"], step=0)
    stored = runtel.Store(base_dir).run(run.id)
    _, (item,) = media_data.items_at(media_data.run_media(stored), "table:t", 0)
    return stored, item


def test_a_table_without_pandas_says_what_to_install(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored, item = _one_table(base_dir)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(MissingExtraError, match="pip install pandas"):
        media_tables.page(stored, item, 0, [])


def test_a_table_changed_on_disk_is_refused(base_dir: Path) -> None:
    stored, item = _one_table(base_dir)
    path = stored.dir / item.file
    path.write_bytes(path.read_bytes().replace(b'"a"', b'"z"'))
    with pytest.raises(StoreCorruptError, match="sha256"):
        media_tables.page(stored, item, 0, [])


def test_an_exact_image_cell_is_shown_by_its_preview(base_dir: Path) -> None:
    with runtel.init(project="p", name="cells", base_dir=str(base_dir)) as run:
        run.log_table(
            "t", [[runtel.Image(np.linspace(0, 1, 4, dtype=np.float32).reshape(2, 2))]], columns=["x"]
        )
    stored = runtel.Store(base_dir).run(run.id)
    _, (item,) = media_data.items_at(media_data.run_media(stored), "table:t", 0)
    cell = media_tables.load(stored, item).frame["x"][0]
    assert cell.path.suffix == ".npy" and cell.preview is not None
    preview, exact = (path.relative_to(stored.dir).as_posix() for path in (cell.preview, cell.path))
    rows, _ = media_tables.page(stored, item, 0, [])
    assert rows == [{"c0": f"![image]({media_data.media_url(stored.id, preview)}?table={item.file})"}]
    assert media_tables.cell_file(stored, item.file, preview) == (stored.dir / preview).resolve()
    assert media_tables.cell_file(stored, item.file, exact) == (stored.dir / exact).resolve()
