"""Metric plots drawn with matplotlib's object API (no pyplot): safe on a worker thread, nothing leaks.

Every series is drawn from at most a few thousand points picked by :func:`minmax_downsample`, so a
1,000,000-point series renders in well under a second and a single spike still shows. Figures are
``matplotlib.figure.Figure`` objects attached to an Agg canvas whatever the user's backend is, and are
not registered with pyplot: save them with ``fig.savefig(...)``.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from runtel.errors import InvalidMetricError, MissingExtraError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FloatArray: TypeAlias = npt.NDArray[np.float64]
#: ``{name: series}``: the seed's ``[{"step": s, "value": v}, ...]``, ``(steps, values)``, plain values
#: (list, tuple, 1-D numpy array) or a pandas Series; see :func:`as_arrays`.
MetricsHistory: TypeAlias = Mapping[str, Any]

#: Points kept per series when drawing: two per bucket, about one bucket per horizontal pixel.
DEFAULT_BUCKETS = 1500
_DPI = 100
_HIST_BINS = 50
_ANNOTATE_UP_TO = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def require_matplotlib() -> None:
    """Raise ``MissingExtraError`` with the fix before any plotting work starts."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtraError("plotting needs matplotlib: pip install runtel[viz]")


def minmax_downsample(
    x: npt.ArrayLike, y: npt.ArrayLike, buckets: int = DEFAULT_BUCKETS
) -> tuple[FloatArray, FloatArray]:
    """At most ``2 * buckets + 2`` points of ``(x, y)`` that draw the same line at that width.

    The points between the first and the last are cut into ``buckets`` consecutive runs; each run
    keeps its minimum and its maximum, in their original order, and the first and last points are
    always kept, so no spike disappears. NaN is never picked over a number (an all-NaN run keeps a
    NaN, which draws as a gap).
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    n = ys.size
    if n <= 2 * buckets + 2:
        return xs, ys
    inner = ys[1:-1]
    size = -(-inner.size // buckets)
    rows = np.full(size * buckets, np.nan)  # NaN padding is never picked over a number
    rows[: inner.size] = inner
    table = rows.reshape(buckets, size)
    nan = np.isnan(table)
    starts = np.arange(buckets) * size
    low = np.argmin(np.where(nan, np.inf, table), axis=1) + starts
    high = np.argmax(np.where(nan, -np.inf, table), axis=1) + starts
    picked = np.minimum(np.concatenate([low, high]), inner.size - 1)  # an all-padding row points past the end
    chosen = np.unique(np.concatenate([[-1, inner.size], picked])) + 1
    return xs[chosen], ys[chosen]


def as_arrays(metrics_history: MetricsHistory) -> dict[str, tuple[FloatArray, FloatArray]]:
    """``{name: (steps, values)}`` float arrays from any accepted shape of ``metrics_history``.

    Each series may be the seed's ``[{"step": s, "value": v}, ...]``, a ``(steps, values)`` pair of
    sequences, a pandas Series (its index as steps when numeric), or plain values: a list, tuple or
    1-D numpy array, drawn at steps 0, 1, 2... Anything else raises :class:`InvalidMetricError`.
    """
    if not isinstance(metrics_history, Mapping):
        raise InvalidMetricError(
            f"metrics_history must map metric names to series, got {type(metrics_history).__name__}"
        )
    return {str(name): _series_arrays(str(name), series) for name, series in metrics_history.items()}


def _series_arrays(name: str, series: Any) -> tuple[FloatArray, FloatArray]:
    if type(series).__name__ == "Series" and hasattr(series, "index") and hasattr(series, "to_numpy"):
        index = np.asarray(series.index)
        numeric = index.dtype.kind in "iuf"
        steps = index if numeric else np.arange(len(series))
        return _checked(name, steps, series.to_numpy(dtype=np.float64, na_value=np.nan))
    if isinstance(series, tuple) and len(series) == 2 and all(_is_sequence(part) for part in series):
        return _checked(name, *series)
    if isinstance(series, np.ndarray) or (isinstance(series, list | tuple) and not _has_dicts(series)):
        values = _checked_values(name, series)
        return np.arange(values.size, dtype=np.float64), values
    if isinstance(series, list | tuple):
        try:
            return _checked(name, [p["step"] for p in series], [p["value"] for p in series])
        except (KeyError, TypeError):
            pass
    raise InvalidMetricError(
        f"metric {name!r}: cannot plot a {type(series).__name__}; give a list/tuple/1-D array of numbers, "
        "a pandas Series, a (steps, values) pair, or [{'step': s, 'value': v}, ...]"
    )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, np.ndarray | list | tuple) or type(value).__name__ == "Series"


def _has_dicts(series: Sequence[Any]) -> bool:
    return any(isinstance(point, Mapping) for point in series)


def _checked_values(name: str, values: Any) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidMetricError(f"metric {name!r}: values must be numbers ({exc})") from None
    if array.ndim != 1:
        raise InvalidMetricError(f"metric {name!r}: values must be one-dimensional, got shape {array.shape}")
    return array


def _checked(name: str, steps: Any, values: Any) -> tuple[FloatArray, FloatArray]:
    step_array, value_array = _checked_values(name, steps), _checked_values(name, values)
    if step_array.size != value_array.size:
        raise InvalidMetricError(
            f"metric {name!r}: {step_array.size} steps but {value_array.size} values; give one step per value"
        )
    return step_array, value_array


def plot_names(metric_names: Sequence[str]) -> dict[str, str]:
    """A distinct file-safe stem per metric name (``train/loss`` -> ``train-loss``; clashes get ``-2``)."""
    stems: dict[str, str] = {}
    used: set[str] = set()
    for name in metric_names:
        base = _UNSAFE.sub("-", name).strip("-.")[:80] or "metric"
        stem, count = base, 1
        while stem in used:
            count += 1
            stem = f"{base}-{count}"
        used.add(stem)
        stems[name] = stem
    return stems


class MetricVisualizer:
    """Builds the figures of a run's metrics; :meth:`save_plots` writes them as PNGs."""

    @staticmethod
    def create_metric_plots(
        metrics_history: MetricsHistory, figsize: tuple[float, float] = (15, 10)
    ) -> dict[str, Figure]:
        """``{"metric_<name>": Figure, ..., "all_metrics_combined": Figure}`` (empty without metrics).

        One figure per metric, then a grid with every metric in its own panel at ``figsize``.
        """
        series = as_arrays(metrics_history)
        if not series:
            return {}
        stems = plot_names(list(series))
        width = min(figsize[0], 10.0)
        figures: dict[str, Figure] = {}
        for name, (steps, values) in series.items():
            figure = _new_figure((width, width * 0.55))
            _draw_line(figure.add_subplot(), name, steps, values, int(width * _DPI))
            figures[f"metric_{stems[name]}"] = figure
        combined = _new_figure(figsize)
        rows, cols = _grid(len(series))
        for position, (name, (steps, values)) in enumerate(series.items(), start=1):
            _draw_line(
                combined.add_subplot(rows, cols, position), name, steps, values, int(figsize[0] * _DPI / cols)
            )
        combined.suptitle("All metrics")
        figures["all_metrics_combined"] = combined
        return figures

    @staticmethod
    def create_distribution_plots(
        metrics_history: MetricsHistory, figsize: tuple[float, float] = (15, 10)
    ) -> dict[str, Figure]:
        """``{"all_metrics_distributions": Figure}`` (a histogram per metric, finite values only),
        plus ``"all_metrics_correlation"`` (Pearson over shared steps) when there are two or more metrics.
        """
        series = as_arrays(metrics_history)
        if not series:
            return {}
        figures: dict[str, Figure] = {}
        histograms = _new_figure(figsize)
        rows, cols = _grid(len(series))
        for position, (name, (_, values)) in enumerate(series.items(), start=1):
            axes = histograms.add_subplot(rows, cols, position)
            finite = values[np.isfinite(values)]
            if finite.size:
                counts, edges = np.histogram(finite, bins=_HIST_BINS)
                axes.stairs(counts, edges, fill=True, alpha=0.7)
            axes.set_title(name, fontsize=9)
        histograms.suptitle("Distributions")
        figures["all_metrics_distributions"] = histograms
        if len(series) >= 2:
            figures["all_metrics_correlation"] = _correlation_figure(series, figsize)
        return figures

    @staticmethod
    def create_comparison_plots(
        runs: Mapping[str, MetricsHistory],
        metrics: Sequence[str] | None = None,
        figsize: tuple[float, float] = (10, 6),
    ) -> dict[str, Figure]:
        """``{metric: Figure}`` with one line per run (``runs`` maps a label to its history).

        ``metrics`` defaults to every metric of any run, in first-seen order; a run lacking one is left out
        of that figure.
        """
        histories = {label: as_arrays(history) for label, history in runs.items()}
        names = (
            list(metrics)
            if metrics is not None
            else list(dict.fromkeys(n for h in histories.values() for n in h))
        )
        figures: dict[str, Figure] = {}
        for name in names:
            figure = _new_figure(figsize)
            axes = figure.add_subplot()
            for label, history in histories.items():
                if name in history:
                    axes.plot(*_drawable(*history[name], int(figsize[0] * _DPI)), linewidth=1.0, label=label)
            axes.set_title(name)
            axes.set_xlabel("step")
            axes.grid(alpha=0.3)
            if axes.lines:
                axes.legend(fontsize=8)
            figures[name] = figure
        return figures

    @staticmethod
    def save_plots(
        metrics_history: MetricsHistory, directory: str | Path, prefix: str = ""
    ) -> dict[str, Path]:
        """Write every figure above as ``<directory>/<prefix><plot name>.png``; returns name -> path."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        series = as_arrays(metrics_history)
        figures = {
            **MetricVisualizer.create_metric_plots(series),
            **MetricVisualizer.create_distribution_plots(series),
        }
        saved: dict[str, Path] = {}
        for name, figure in figures.items():
            path = target / f"{prefix}{name}.png"
            figure.savefig(path, dpi=_DPI)
            saved[f"{prefix}{name}"] = path
        return saved


def _new_figure(figsize: tuple[float, float]) -> Figure:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _grid(count: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def _drawable(steps: FloatArray, values: FloatArray, pixels: int) -> tuple[FloatArray, FloatArray]:
    """The points to draw at ``pixels`` width; ±inf becomes a gap like NaN (an axis cannot reach infinity)."""
    return minmax_downsample(steps, np.where(np.isinf(values), np.nan, values), max(pixels, 100))


def _draw_line(axes: Any, name: str, steps: FloatArray, values: FloatArray, pixels: int) -> None:
    x, y = _drawable(steps, values, pixels)
    axes.plot(x, y, linewidth=1.0, marker="o" if y.size <= 50 else None, markersize=3)
    axes.set_title(name, fontsize=10)
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)


def _correlation_figure(
    series: dict[str, tuple[FloatArray, FloatArray]], figsize: tuple[float, float]
) -> Figure:
    names = list(series)
    last = {name: _last_per_step(*series[name]) for name in names}
    matrix = np.full((len(names), len(names)), np.nan)
    for i, first in enumerate(names):
        for j in range(i, len(names)):
            matrix[i, j] = matrix[j, i] = _pearson(last[first], last[names[j]])
    side = min(min(figsize), 4.0 + 0.5 * len(names))
    figure = _new_figure((side + 1.5, side))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    axes.set_xticks(range(len(names)), labels=names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), labels=names, fontsize=8)
    if len(names) <= _ANNOTATE_UP_TO:
        for (i, j), value in np.ndenumerate(matrix):
            text, color = ("n/a", "black") if math.isnan(value) else (f"{value:.2f}", _ink(value))
            axes.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    figure.colorbar(image, ax=axes)
    axes.set_title("Metric correlation (shared steps)")
    return figure


def _ink(correlation: float) -> str:
    """Label colour readable on the cell's colour (dark cells at strong correlations)."""
    return "white" if abs(correlation) > 0.6 else "black"


def _last_per_step(steps: FloatArray, values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Steps in ascending order with the last value logged at each (a re-logged step counts once)."""
    reversed_steps = steps[::-1]
    unique, first_from_end = np.unique(reversed_steps, return_index=True)
    return unique, values[::-1][first_from_end]


def _pearson(a: tuple[FloatArray, FloatArray], b: tuple[FloatArray, FloatArray]) -> float:
    """Correlation over the steps both series have finite values at; NaN with fewer than 2 or no spread."""
    _, in_a, in_b = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    x, y = a[1][in_a], b[1][in_b]
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(np.dot(x, y) / denominator, -1.0, 1.0))
