"""Runs grouped by fields (``params.lr``, ``tags``...) and one metric aggregated per group: mean ± std.

Per group, every run's series is put on one common step grid by linear interpolation inside that run's
own step range (never extrapolated: a run counts only at grid steps between its first and last step),
then each grid step gets the mean, std, min, max and n over the runs that cover it. Each run's best and
last value are aggregated the same way. Series are read with :meth:`StoredRun.history` (memory-mapped).

NaN is a missing value for statistics: a grid step that hits a NaN point, or lies between two points one
of which is NaN, is NaN for that run and left out of that step's statistics and ``n``. Infinities stay
data (a mean over ``inf`` is ``inf``, a std over it NaN). A run without the metric, or whose folder
cannot be read, is listed in :attr:`Aggregate.skipped` with the reason, never silently dropped.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from runtel.errors import ConfigError, MetricNotFoundError, MissingExtraError
from runtel.store.query import Mode, StoredRun, best_direction
from runtel.store.scan import READ_ERRORS
from runtel.store.where import MISSING, field_reader

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: ``"union"``: every step any run of the group logged; an int N: N evenly spaced steps over the group's
#: range; a sequence: exactly those steps (the same grid for every group).
Grid = Literal["union"] | int | Sequence[float] | npt.NDArray[Any]

#: Most runs x grid steps one group may hold in memory (float64: 1 GiB); more asks for ``grid=N``.
MAX_CELLS = 1 << 27
#: The fields of a run besides its params that make sense to group by (the UI offers them).
RUN_FIELDS = ("name", "id", "project", "status", "tags")


@dataclass(frozen=True, slots=True)
class Stats:
    """Mean, std, min, max and n of one value per run (its best, or its last); NaN values left out."""

    values: FloatArray
    mean: float
    std: float
    min: float
    max: float
    n: int


@dataclass(frozen=True, slots=True)
class Group:
    """One group: its field values, its runs and the metric's statistics on the common step grid."""

    #: One value per ``by`` field (None where a run lacks it; tags as a sorted tuple).
    key: tuple[Any, ...]
    label: str
    run_ids: tuple[str, ...]
    run_names: tuple[str, ...]
    #: The grid (float64; whole numbers on the union grid), then one entry per grid step in each array.
    step: FloatArray
    mean: FloatArray
    std: FloatArray
    min: FloatArray
    max: FloatArray
    #: Runs with a non-NaN value at each grid step.
    n: IntArray
    #: Statistics of each run's best value (NaN-skipping, direction from ``mode``) and of its last value.
    best: Stats
    last: Stats


@dataclass(frozen=True, slots=True)
class SkippedRun:
    """A run left out of the aggregate, and why (no such metric, no points yet, an unreadable file)."""

    name: str
    id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Aggregate:
    """What :meth:`runtel.Store.aggregate` returns: one :class:`Group` per distinct key, sorted by key."""

    metric: str
    by: tuple[str, ...]
    direction: Literal["min", "max"]
    ddof: int
    groups: tuple[Group, ...]
    skipped: tuple[SkippedRun, ...]

    def group(self, *key: Any) -> Group:
        """The group whose key is ``key`` (one value per ``by`` field); ``KeyError`` naming the keys."""
        for group in self.groups:
            if _typed(group.key) == _typed(key):
                return group
        raise KeyError(f"no group {key!r}; groups: {', '.join(repr(g.key) for g in self.groups)}")

    def table(self) -> list[dict[str, Any]]:
        """One row per group: the ``by`` values, n, and mean/std/min/max of the best and of the last values
        (what ``runtel ls --group-by`` prints)."""
        rows = []
        for group in self.groups:
            row: dict[str, Any] = dict(zip(self.by, _plain(group.key), strict=True))
            row.update(group=group.label, runs=len(group.run_ids))
            for kind, stats in (("best", group.best), ("last", group.last)):
                row.update({f"{kind}_{stat}": getattr(stats, stat) for stat in ("mean", "std", "min", "max")})
                row[f"{kind}_n"] = stats.n
            rows.append(row)
        return rows

    def to_frame(self) -> Any:
        """A long ``pandas.DataFrame``: one row per (group, grid step), columns the ``by`` fields, ``step``,
        ``mean``, ``std``, ``min``, ``max``, ``n``. Needs pandas (``runtel[frames]``)."""
        try:
            pandas = importlib.import_module("pandas")  # optional, and untyped: a module object here
        except ImportError:
            raise MissingExtraError("Aggregate.to_frame needs pandas: pip install 'runtel[frames]'") from None
        keys: dict[str, list[Any]] = {field: [] for field in self.by}
        for group in self.groups:
            for field, value in zip(self.by, _plain(group.key), strict=True):
                keys[field].extend([value] * group.step.size)
        columns: dict[str, list[Any] | npt.NDArray[Any]] = dict(keys)
        for stat in ("step", "mean", "std", "min", "max", "n"):
            parts = [getattr(group, stat) for group in self.groups]
            columns[stat] = np.concatenate(parts) if parts else np.empty(0)
        return pandas.DataFrame(columns)


def aggregate(
    runs: Sequence[StoredRun],
    metric: str,
    by: Sequence[str] = (),
    *,
    grid: Grid = "union",
    mode: Mode = "auto",
    ddof: int = 1,
) -> Aggregate:
    """``metric`` of ``runs`` grouped by the ``by`` fields (none: one group of every run).

    ``by`` names fields of the filter grammar (:mod:`runtel.store.where`): ``params.<dotted.path>``,
    ``project``, ``status``, ``tags`` (a run's tag set), ``name``...; a run lacking a field groups under
    None. ``ddof=1`` gives the sample std (NaN for a group of one run).
    """
    fields, readers = _readers(by)
    chosen_grid = _checked_grid(grid)
    if not isinstance(ddof, int) or isinstance(ddof, bool) or ddof < 0:
        raise ConfigError(f"ddof must be a non-negative integer, got {ddof!r}")
    direction = best_direction(metric, mode)
    #: By :func:`_typed` key (True and 1 apart, as in ``where``), with the key the group shows.
    members: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[tuple[StoredRun, Any, Any]]]] = {}
    skipped: list[SkippedRun] = []
    for run in runs:
        try:
            steps, _, values = run.history(metric)
            key = _key(run, fields, readers)
        except MetricNotFoundError:
            skipped.append(SkippedRun(run.name, run.id, f"has no metric {metric!r}"))
            continue
        except READ_ERRORS as exc:
            skipped.append(SkippedRun(run.name, run.id, f"{type(exc).__name__}: {exc}"))
            continue
        if values.size == 0:
            skipped.append(SkippedRun(run.name, run.id, f"has no points of {metric!r} yet"))
            continue
        members.setdefault(_typed(key), (key, []))[1].append((run, steps, values))
    groups = tuple(
        _group(key, fields, runs_of, chosen_grid, direction, ddof)
        for key, runs_of in sorted(members.values(), key=lambda group: _order(group[0]))
    )
    return Aggregate(metric, fields, direction, ddof, groups, tuple(skipped))


def _group(
    key: tuple[Any, ...],
    fields: tuple[str, ...],
    members: list[tuple[StoredRun, Any, Any]],
    grid: FloatArray | int | None,
    direction: Literal["min", "max"],
    ddof: int,
) -> Group:
    curves = [_ordered(steps, values) for _, steps, values in members]
    if grid is None:
        step = np.unique(np.concatenate([steps for steps, _ in curves]))
    elif isinstance(grid, int):
        low = min(float(steps[0]) for steps, _ in curves)
        high = max(float(steps[-1]) for steps, _ in curves)
        step = np.linspace(low, high, grid) if high > low else np.array([low])
    else:
        step = grid
    if step.size * len(curves) > MAX_CELLS:
        raise ConfigError(
            f"group {key!r} would put {len(curves)} runs on {step.size:,} grid steps "
            f"({step.size * len(curves) * 8 / 2**30:.1f} GiB); pass grid=N (e.g. grid=2000) for N evenly "
            "spaced steps"
        )
    matrix = np.stack([_on_grid(steps, values, step) for steps, values in curves])
    mean, std, low_, high_, n = _column_stats(matrix, ddof)
    best = [_best(values, direction) for _, _, values in members]
    last = [float(values[-1]) for _, _, values in members]
    return Group(
        key=key,
        label=", ".join(f"{field}={_shown(value)}" for field, value in zip(fields, key, strict=True))
        or "all runs",
        run_ids=tuple(run.id for run, _, _ in members),
        run_names=tuple(run.name for run, _, _ in members),
        step=step,
        mean=mean,
        std=std,
        min=low_,
        max=high_,
        n=n,
        best=_stats(np.array(best, dtype=np.float64), ddof),
        last=_stats(np.array(last, dtype=np.float64), ddof),
    )


def _ordered(steps: Any, values: Any) -> tuple[FloatArray, FloatArray]:
    """Steps ascending and distinct: a step logged twice keeps its last value (as ``last`` does)."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if s.size < 2 or bool(np.all(s[1:] > s[:-1])):
        return s, v
    newest_first_steps, newest_first_values = s[::-1], v[::-1]
    order = np.argsort(newest_first_steps, kind="stable")  # among equal steps, the last logged comes first
    unique, first = np.unique(newest_first_steps[order], return_index=True)
    return unique, newest_first_values[order][first]


def _on_grid(steps: FloatArray, values: FloatArray, grid: FloatArray) -> FloatArray:
    """``values`` linearly interpolated at ``grid``; NaN outside ``[steps[0], steps[-1]]`` and where a
    bracketing point is NaN. A grid step equal to a logged step takes that point's value exactly."""
    if steps.size == grid.size and np.array_equal(steps, grid):
        return values
    out = np.full(grid.size, np.nan)
    inside = (grid >= steps[0]) & (grid <= steps[-1])
    at = grid[inside]
    left = np.searchsorted(steps, at, side="right") - 1
    right = np.minimum(left + 1, steps.size - 1)
    exact = steps[left] == at
    span = steps[right] - steps[left]
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(exact, 0.0, (at - steps[left]) / np.where(exact, 1.0, span))
        between = (1.0 - weight) * values[left] + weight * values[right]
    out[inside] = np.where(exact, values[left], between)
    return out


def _column_stats(
    matrix: FloatArray, ddof: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
    """Per column: mean, std, min, max over the non-NaN entries, and how many there are."""
    present = ~np.isnan(matrix)
    n = present.sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # all-NaN columns and n <= ddof give NaN, as documented
        mean = np.nanmean(matrix, axis=0)
        std = np.nanstd(matrix, axis=0, ddof=ddof)
        low = np.nanmin(matrix, axis=0)
        high = np.nanmax(matrix, axis=0)
    std[n <= ddof] = np.nan
    return mean, std, low, high, n.astype(np.int64)


def _stats(values: FloatArray, ddof: int) -> Stats:
    mean, std, low, high, n = _column_stats(values[:, None], ddof)
    return Stats(values, float(mean[0]), float(std[0]), float(low[0]), float(high[0]), int(n[0]))


def _best(values: Any, direction: Literal["min", "max"]) -> float:
    """The run's best value, NaN points skipped (NaN when every point is NaN), as ``StoredRun.best``."""
    finite = np.asarray(values, dtype=np.float64)
    if np.isnan(finite).all():
        return math.nan
    return float(np.nanmin(finite) if direction == "min" else np.nanmax(finite))


def _readers(by: Sequence[str]) -> tuple[tuple[str, ...], list[Callable[[StoredRun], Any]]]:
    """The fields and a reader of each (the filter grammar's, so names match ``where``)."""
    fields = (by,) if isinstance(by, str) else tuple(by)
    for field in fields:
        if not isinstance(field, str):
            raise ConfigError(f"a group-by field is a string such as 'params.lr', got {field!r}")
    if len(set(fields)) != len(fields):
        raise ConfigError(f"group-by fields repeat: {list(fields)!r}")
    return fields, [field_reader(field) for field in fields]


def _key(
    run: StoredRun, fields: tuple[str, ...], readers: list[Callable[[StoredRun], Any]]
) -> tuple[Any, ...]:
    """The run's group key, hashable: tags a sorted tuple (a tag set), lists tuples, objects JSON text.

    Params fields read ``hyperparameters.json`` validated first, so a damaged file skips the run with
    its reason instead of grouping it under None."""
    if any(field.startswith("params") for field in fields):
        run.params()
    values = [_hashable(None if (value := read(run)) is MISSING else value) for read in readers]
    return tuple(
        tuple(sorted(value)) if field == "tags" else value
        for field, value in zip(fields, values, strict=True)
    )


def _checked_grid(grid: Grid) -> FloatArray | int | None:
    """None for ``"union"``, the number of points of a count, the sorted distinct steps of a sequence."""
    if isinstance(grid, str):
        if grid != "union":
            raise ConfigError(
                f"grid must be 'union', a number of points or a sequence of steps, got {grid!r}"
            )
        return None
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        if grid < 1:
            raise ConfigError(f"grid of {grid} points: give 1 or more")
        return int(grid)
    try:
        steps = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"grid must be 'union', a number of points or a sequence of steps, got {grid!r}"
        ) from None
    if steps.ndim != 1 or steps.size == 0 or not np.isfinite(steps).all():
        raise ConfigError("a grid of steps must be a non-empty, one-dimensional sequence of finite numbers")
    return np.unique(steps)


def _typed(value: Any) -> Any:
    """``value`` with each bool marked: ``True == 1`` in Python, but a flag is not a number."""
    if isinstance(value, bool):
        return (bool, value)
    if isinstance(value, tuple):
        return (tuple, *(_typed(item) for item in value))
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


#: Sort order of key values of different kinds: numbers, then text, then everything else, None last.
_KIND_ORDER: dict[type, int] = {bool: 0, int: 1, float: 1, str: 2, tuple: 3}


def _order(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    def rank(value: Any) -> tuple[int, Any]:
        if value is None:
            return (9, "")
        kind = _KIND_ORDER.get(type(value), 4)
        if kind == 1 and math.isnan(value):
            return (1, math.inf)
        if kind == 3:
            return (3, tuple(str(item) for item in value))
        return (kind, value if kind in (0, 1, 2) else str(value))

    return tuple(rank(value) for value in key)


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return ",".join(_shown(item) for item in value) or "(none)"
    return str(value)


def _plain(key: tuple[Any, ...]) -> list[Any]:
    """``key`` as JSON-friendly values (tuples as lists)."""
    return [list(value) if isinstance(value, tuple) else value for value in key]
