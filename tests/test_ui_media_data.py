"""What the UI's media section reads from the store, without a browser: the index of figures, media and
histograms per run, the nearest step, distributions and heatmaps, tables by page, damaged logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.records import HistogramLogged
from runtel.store.query import StoredRun
from runtel.ui import media_data


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
    assert [media_data.finite_or_text(cell) for cell in cells] == [
        "NaN",
        "inf",
        "-inf",
        1.5,
        3,
        None,
        "(1, 2)",
    ]
