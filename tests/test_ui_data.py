"""What the UI and CLI read from the store, without a browser: listing, downsampling, smoothing, tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.errors import RunNotFoundError
from runtel.store.scan import scan
from runtel.ui import data


@pytest.fixture
def two_runs(base_dir: Path) -> list[runtel.Store]:
    for name, lr in (("alpha", 0.1), ("beta", 0.01)):
        with runtel.init(
            project="p", name=name, base_dir=str(base_dir), config={"lr": lr, "depth": 4}
        ) as run:
            for _ in run.epochs(2):
                for _ in range(5):
                    run.log({"loss": 1.0 / (run.step + 1), "acc": run.step * lr})
    return scan(base_dir).runs


def test_scan_lists_runs_and_notes_every_other_folder(two_runs: list, base_dir: Path) -> None:
    (base_dir / "unrelated").mkdir()
    (base_dir / "torn_meta").mkdir()
    (base_dir / "torn_meta" / "metadata.json").write_text('{"id": "ab')
    (base_dir / "no_id").mkdir()
    (base_dir / "no_id" / "metadata.json").write_text("{}")
    listing = scan(base_dir)
    assert [run.name for run in listing.runs] == ["alpha", "beta"]
    assert {item.folder: item.reason for item in listing.skipped} == {
        "no_id": "metadata.json field 'id' is missing",
        "torn_meta": "metadata.json is not valid JSON (half-written or damaged, line 1 column 8)",
        "unrelated": "not a run folder (no metadata.json)",
    }


def test_metadata_with_non_string_name_or_project_is_skipped_with_the_reason(
    two_runs: list, base_dir: Path
) -> None:
    (base_dir / "foreign").mkdir()
    (base_dir / "foreign" / "metadata.json").write_text(
        '{"id": "abcdef0123456789", "name": 5, "project": ["x"]}'
    )
    (base_dir / "odd_id").mkdir()
    (base_dir / "odd_id" / "metadata.json").write_text('{"id": 12345678}')
    listing = scan(base_dir)
    assert [run.name for run in listing.runs] == ["alpha", "beta"]
    assert {item.folder: item.reason for item in listing.skipped} == {
        "foreign": "metadata.json field 'name' is an integer, not a string",
        "odd_id": "metadata.json field 'id' is an integer, not a string",
    }
    assert [run.name for run in runtel.Store(base_dir).runs()] == ["alpha", "beta"]
    with pytest.raises(RunNotFoundError):
        runtel.Store(base_dir).run("abcdef0123456789")


def test_resolve_accepts_only_exact_listed_ids(two_runs: list, base_dir: Path) -> None:
    listing = scan(base_dir)
    first = listing.runs[0]
    assert listing.resolve([first.id, first.id[:8], "../..", 3, first.name]) == [first]
    assert listing.resolve("not-a-list") == []


def test_minmax_keeps_every_spike_first_and_last_within_bound() -> None:
    y = np.zeros(1_000_000)
    y[[1, 123_457, 999_998]] = [-7.0, 9.0, 5.0]
    x = np.arange(y.size, dtype=np.float64)
    picked = data.minmax_indices(x, y, buckets=1000)
    assert picked.size <= 2 * 1000 + 2
    assert {0, 1, 123_457, 999_998, 999_999} <= set(picked.tolist())


def test_minmax_buckets_by_x_not_by_index() -> None:
    x = np.concatenate([np.arange(10_000.0), [1e6]])  # one far point owns most of the x-range
    y = np.arange(x.size, dtype=np.float64)
    assert data.minmax_indices(x, y, buckets=100).size <= 2 * 100 + 2


def test_minmax_keeps_a_nan_gap() -> None:
    y = np.ones(10_000)
    y[5000:6000] = np.nan
    picked = data.minmax_indices(np.arange(10_000.0), y, buckets=100)
    assert np.isnan(y[picked]).any()


def test_series_view_zoom_sends_visible_points_and_neighbours(base_dir: Path) -> None:
    with runtel.init(project="p", name="z", base_dir=str(base_dir)) as run:
        for step in range(10_000):
            run.log({"m": float(step % 7)}, step=step)
    stored = runtel.Store(base_dir).run("z")
    whole = data.series_view(stored, "m", buckets=100)
    assert whole.total == whole.visible == 10_000 and whole.downsampled
    assert whole.label("z") == f"z (downsampled 10,000 → {whole.x.size:,})"
    zoom = data.series_view(stored, "m", x_range=(100.0, 150.0))
    assert zoom.x.tolist() == list(range(99, 152)) and not zoom.downsampled
    timed = data.series_view(stored, "m", x_axis="time")
    assert 0 <= timed.x[0] <= timed.x[-1] < 60


def test_series_view_sorts_steps_that_went_backwards(base_dir: Path) -> None:
    with runtel.init(project="p", name="back", base_dir=str(base_dir)) as run:
        for step in (0, 1, 2, 1, 3):
            run.log({"m": float(step)}, step=step)
    view = data.series_view(runtel.Store(base_dir).run("back"), "m")
    assert view.x.tolist() == [0, 1, 1, 2, 3]


@pytest.mark.parametrize("weight", [0.3, 0.9, 0.999])
def test_ema_matches_the_plain_recurrence_and_skips_non_finite(weight: float) -> None:
    values = np.random.default_rng(1).normal(size=1_000)
    values[[10, 500]] = [np.nan, np.inf]
    expected, numerator, weights = [], 0.0, 0.0
    for value in values:
        finite = np.isfinite(value)
        numerator = weight * numerator + (value if finite else 0.0)
        weights = weight * weights + finite
        expected.append(numerator / weights if finite else np.nan)
    np.testing.assert_allclose(data.ema(values, weight), expected, rtol=1e-9, atol=1e-12)


def test_params_rows_flag_differences(two_runs: list) -> None:
    rows = {row["key"]: row for row in data.params_rows(two_runs)}
    assert rows["lr"] == {"key": "lr", "values": [0.1, 0.01], "differs": True}
    assert rows["depth"]["differs"] is False


def test_run_row_card_spans_and_best(two_runs: list) -> None:
    run = two_runs[0]
    row = data.run_row(run)
    assert (row["status"], row["points"], row["problems"]) == ("completed", 20, [])
    assert row["best"] == pytest.approx({"loss": 1 / 9, "acc": 0.8})
    card = data.run_card(run)
    assert card["exporters"]["local"]["status"] == "ok" and card["adaptations"] == 0
    assert [span["name"] for span in data.span_rows(run)] == ["epoch 0", "epoch 1"]
    assert data.best_values(two_runs, ["acc"])["acc"][1]["best"] == pytest.approx(0.08)


def test_filter_and_sort_rows(two_runs: list) -> None:
    rows = [data.run_row(run) for run in two_runs]
    assert [r["name"] for r in data.sort_rows(rows, "name", descending=True)] == ["beta", "alpha"]
    assert [r["name"] for r in data.filter_rows(rows, name=" BET ")] == ["beta"]  # "t" is not hex: no id
    beta_id = rows[1]["id"]
    assert [r["id"] for r in data.filter_rows(rows, name=beta_id[:12])] == [beta_id]
    assert data.filter_rows(rows, statuses=["crashed"]) == []


def test_damaged_summary_and_index_become_problems(two_runs: list) -> None:
    run = two_runs[0]
    (run.dir / "summary.json").write_text("{")
    (run.dir / "metrics" / "index.json").write_text("[")
    row = data.run_row(run)
    assert row["problems"] == [
        "summary.json is not valid JSON (half-written or damaged, line 1 column 2)",
        "metrics/index.json is not valid JSON (half-written or damaged, line 1 column 2)",
    ]
    assert data.metric_names([run]) == [] and data.run_card(run)["exporters"] == {}


def test_artifact_rows_have_versions_and_checksums(base_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "w.bin"
    with runtel.init(project="p", name="art", base_dir=str(base_dir)) as run:
        for content in (b"one", b"two"):
            source.write_bytes(content)
            run.log_artifact(str(source))
    rows = data.artifact_rows(runtel.Store(base_dir).run("art"))
    assert [(row["name"], row["version"], row["size"]) for row in rows] == [("w.bin", 1, 3), ("w.bin", 2, 3)]
    assert len(rows[0]["sha256"]) == 64


def test_metric_figure_says_when_downsampled(base_dir: Path) -> None:
    from runtel.ui.app import metric_figure

    with runtel.init(project="p", name="f", base_dir=str(base_dir)) as run:
        for step in range(20_000):
            run.log({"m": float(step)}, step=step)
    figure = metric_figure(runtel.Store(base_dir).runs(), "m", "step", None, log=False, smoothing=0.0)
    (trace,) = figure.data
    assert "downsampled 20,000 →" in trace.name and len(trace.x) <= 2 * data.DEFAULT_BUCKETS + 4


def test_report_dir_inside_the_store_is_refused(base_dir: Path) -> None:
    from runtel.ui import create_app

    with pytest.raises(ValueError, match="inside the store"):
        create_app(base_dir, report_dir=base_dir / "reports")


def test_binding_beyond_loopback_is_warned(base_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    from runtel.ui import create_app
    from runtel.ui.server import is_loopback, make_server

    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    app = create_app(base_dir)
    with caplog.at_level(logging.WARNING, logger="runtel.ui"):
        make_server(app, "127.0.0.1", 0).server_close()
        assert not caplog.records
        make_server(app, "0.0.0.0", 0).server_close()
    assert "no authentication" in caplog.text


def test_fingerprint_changes_when_a_run_writes(base_dir: Path) -> None:
    run = runtel.init(project="p", name="live", base_dir=str(base_dir))
    run.log({"m": 1.0})
    run.flush()
    stored = scan(base_dir).runs
    before = data.fingerprint(base_dir, stored)
    assert data.fingerprint(base_dir, stored) == before
    run.log({"m": 2.0})
    run.flush()
    assert data.fingerprint(base_dir, stored) != before
    run.finish()
    assert json.loads((stored[0].dir / "metadata.json").read_text())["status"] == "completed"
