"""MetricVisualizer and the min/max downsampling it draws with."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import runtel
from runtel.tracking import ExperimentTracker, MetricVisualizer, minmax_downsample
from runtel.tracking.visualizer import as_arrays


def _spiky(n: int, at: int, spike: float) -> tuple[np.ndarray, np.ndarray]:
    steps = np.arange(n)
    values = np.sin(steps / 5_000.0)
    values[at] = spike
    return steps, values


def test_downsampling_keeps_first_last_and_every_bucket_extreme() -> None:
    steps, values = _spiky(100_000, 31_337, -7.0)
    values[77_777] = 7.0
    x, y = minmax_downsample(steps, values, buckets=500)
    assert x.size <= 2 * 500 + 2
    assert (x[0], y[0], x[-1], y[-1]) == (0, values[0], 99_999, values[-1])
    assert -7.0 in y and 7.0 in y
    assert np.all(np.diff(x) > 0)
    assert np.array_equal(y, values[x.astype(int)])


def test_short_series_are_drawn_unchanged() -> None:
    x, y = minmax_downsample([0, 1, 2], [3.0, 1.0, 2.0])
    assert x.tolist() == [0, 1, 2] and y.tolist() == [3.0, 1.0, 2.0]


def test_downsampling_prefers_numbers_over_nan_and_keeps_an_all_nan_gap() -> None:
    values = np.arange(10_000, dtype=np.float64)
    values[100:200] = math.nan
    values[5_000:6_000] = math.nan
    values[150] = -1.0
    _, y = minmax_downsample(np.arange(values.size), values, buckets=20)
    assert -1.0 in y
    assert np.isnan(y).sum() >= 1  # the 1,000-point all-NaN stretch still shows as a gap


def test_a_million_points_with_one_spike_are_drawn_downsampled_with_the_spike(tmp_path: Path) -> None:
    """The time this takes is a figure of bench/bench_autoviz.py, not asserted here."""
    steps, values = _spiky(1_000_000, 654_321, 50.0)
    values[10:20] = math.nan
    figures = MetricVisualizer.create_metric_plots({"loss": (steps, values)})
    line = figures["metric_loss"].axes[0].lines[0]
    figures["metric_loss"].savefig(tmp_path / "loss.png")
    assert imread(tmp_path / "loss.png").ndim == 3
    assert 50.0 in line.get_ydata()
    assert line.get_xdata()[0] == 0 and line.get_xdata()[-1] == 999_999
    assert line.get_ydata().size < 10_000
    assert imread(tmp_path / "loss.png").ndim == 3


def test_both_history_shapes_give_the_same_figures() -> None:
    points = {"loss": [{"step": s, "value": 1.0 / (s + 1)} for s in range(5)]}
    arrays = {"loss": (np.arange(5), 1.0 / (np.arange(5) + 1))}
    from_points = MetricVisualizer.create_metric_plots(points)
    from_arrays = MetricVisualizer.create_metric_plots(arrays)
    assert list(from_points) == list(from_arrays) == ["metric_loss", "all_metrics_combined"]
    a, b = (f["metric_loss"].axes[0].lines[0] for f in (from_points, from_arrays))
    assert a.get_ydata().tolist() == b.get_ydata().tolist()


def test_nan_and_inf_do_not_break_any_plot(tmp_path: Path) -> None:
    history = {
        "loss": (np.arange(6), np.array([1.0, math.nan, math.inf, 0.5, -math.inf, 0.25])),
        "all_nan": (np.arange(3), np.full(3, math.nan)),
        "acc": (np.arange(6), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])),
    }
    saved = MetricVisualizer.save_plots(history, tmp_path)
    assert set(saved) == {
        "metric_loss",
        "metric_all_nan",
        "metric_acc",
        "all_metrics_combined",
        "all_metrics_distributions",
        "all_metrics_correlation",
    }
    assert all(imread(path).ndim == 3 for path in saved.values())


def test_correlation_uses_shared_steps() -> None:
    history = {"a": (np.arange(10), np.arange(10.0)), "b": (np.arange(5, 15), -np.arange(5, 15.0))}
    figure = MetricVisualizer.create_distribution_plots(history)["all_metrics_correlation"]
    labels = [text.get_text() for text in figure.axes[0].texts]
    assert labels == ["1.00", "-1.00", "-1.00", "1.00"]


def test_metric_names_become_distinct_file_names(tmp_path: Path) -> None:
    history = {"train/loss": ([0], [1.0]), "train-loss": ([0], [2.0]), "../x": ([0], [3.0])}
    saved = MetricVisualizer.save_plots(history, tmp_path)
    assert {"metric_train-loss", "metric_train-loss-2", "metric_x"} <= set(saved)
    assert all(path.parent == tmp_path for path in saved.values())


def test_comparison_plots_have_a_line_per_run() -> None:
    figures = MetricVisualizer.create_comparison_plots(
        {"a": {"loss": ([0, 1], [1.0, 0.5])}, "b": {"loss": ([0, 1], [2.0, 1.0]), "acc": ([0], [0.3])}}
    )
    assert list(figures) == ["loss", "acc"]
    assert [line.get_label() for line in figures["loss"].axes[0].lines] == ["a", "b"]


def test_missing_matplotlib_names_the_extra(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(runtel.MissingExtraError, match=r"pip install runtel\[viz\]"):
        MetricVisualizer.create_metric_plots({"loss": ([0], [1.0])})
    with pytest.raises(runtel.MissingExtraError, match=r"pip install runtel\[viz\]"):
        ExperimentTracker("x", base_dir=base_dir)
    tracker = ExperimentTracker("x", base_dir=base_dir, auto_visualize=False)
    tracker.log_metrics({"loss": 1.0})
    with pytest.raises(runtel.MissingExtraError, match=r"pip install runtel\[viz\]"):
        tracker.generate_visualizations()
    tracker.finish()


def test_plain_values_arrays_and_pandas_series_are_plotted() -> None:
    import pandas as pd

    history = {
        "list": [0.5, 0.4, 0.3],
        "array": np.array([1.0, 2.0, math.nan]),
        "series": pd.Series([3.0, 2.0], index=[10, 20]),
        "seed": [{"step": 5, "value": 1.5}],
        "pair": ([1, 2], [0.1, 0.2]),
    }
    series = as_arrays(history)
    assert series["list"][0].tolist() == [0, 1, 2] and series["list"][1].tolist() == [0.5, 0.4, 0.3]
    assert np.array_equal(series["array"][1], history["array"], equal_nan=True)
    assert series["series"][0].tolist() == [10, 20] and series["series"][1].tolist() == [3.0, 2.0]
    assert series["seed"][0].tolist() == [5] and series["pair"][1].tolist() == [0.1, 0.2]
    figures = MetricVisualizer.create_metric_plots(history)
    assert set(figures) == {f"metric_{name}" for name in history} | {"all_metrics_combined"}


@pytest.mark.parametrize(
    ("series", "message"),
    [
        (0.5, "cannot plot a float"),
        ("abc", "cannot plot a str"),
        (np.ones((2, 2)), "one-dimensional"),
        (["a", "b"], "values must be numbers"),
        (([1, 2, 3], [0.1]), "3 steps but 1 values"),
    ],
)
def test_anything_else_is_refused_naming_the_metric(series: object, message: str) -> None:
    with pytest.raises(runtel.InvalidMetricError, match=rf"metric 'loss'.*{message}"):
        MetricVisualizer.create_metric_plots({"loss": series})
