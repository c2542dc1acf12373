"""Runs and histories as DataFrames (pandas, or polars), with the stored values exactly.

- :func:`runs_frame`: one row per run; ``id``, ``name``, ``project``, ``status``, ``tags`` (a list),
  ``start_time`` (seconds since the epoch, as stored; ``pandas.to_datetime(df.start_time, unit="s",
  utc=True)`` makes dates of it), ``duration`` (seconds), ``params.<dotted.path>`` and
  ``metrics.<name>.<stat>`` for every stat of :data:`runtel.store.where.STATS`.
- :func:`history_frame`: one row per step, ``step``, ``time`` and one column per metric, joined on the
  step. A metric logged more than once at a step keeps every point: its k-th point at step s goes to
  row (s, k), so such a step has several rows, in logging order, and another metric logged once there
  fills only the first. ``time`` is the earliest time of the row's points; ``long=True`` gives one row
  per point instead (``metric``, ``step``, ``time``, ``value``), each with its own time.

Dtypes are nullable where a value can be absent: a metric or float param column is ``Float64``, whose
missing cells are ``<NA>`` and whose stored NaN stays NaN (``.astype("float64")`` makes both NaN);
integers are ``Int64`` (exact beyond 2**53), booleans ``boolean``, text ``string``. A param column
holding several kinds (a number in some runs, a string in others), lists or objects, or integers too
large for int64 or for an exact float, is ``object`` with the values as stored. JSON ``null`` is missing.
A run's ``summary.json`` or ``hyperparameters.json`` that cannot be read (damaged) leaves its cells
missing, and one warning on the ``runtel`` logger names each such file.

pandas and polars are imported only here, when a frame is asked for; without them the error names
the extra to install (``runtel[frames]``, ``runtel[polars]``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from runtel.errors import ConfigError, MissingExtraError
from runtel.store.query import best_direction, live_status

if TYPE_CHECKING:
    from runtel.store.query import StoredRun

_LOGGER = logging.getLogger("runtel")
Backend = Literal["pandas", "polars"]
#: Column kinds, from which each backend picks its dtype.
Kind = Literal["string", "int", "float", "bool", "object", "tags"]

_EXACT_FLOAT_INT = 2**53
_INT64 = (-(2**63), 2**63 - 1)
_INTEGER_STATS = frozenset({"count", "last_step"})
_REAL = (int, float)
_NO_STATS: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class _Column:
    """One column before it becomes a backend's: values (None where absent) and their kind."""

    name: str
    kind: Kind
    values: list[Any]


def runs_frame(
    runs: Sequence[StoredRun], *, metrics: Sequence[str] | None = None, backend: Backend = "pandas"
) -> Any:
    """One row per run of ``runs``; ``metrics`` limits the ``metrics.*`` columns to those names."""
    from runtel.store.scan import listing_params, listing_summary
    from runtel.store.where import STATS, duration_of

    module = _backend(backend)
    unreadable: list[str] = []
    summaries = [_readable(run, listing_summary(run), unreadable) for run in runs]
    params = [_flatten(_readable(run, listing_params(run), unreadable)) for run in runs]
    if unreadable:
        _LOGGER.warning(
            "runtel: %d file(s) of the runs could not be read; their cells are missing: %s",
            len(unreadable),
            "; ".join(unreadable),
        )
    columns = [
        _Column("id", "string", [run.id for run in runs]),
        _Column("name", "string", [run.name for run in runs]),
        _Column("project", "string", [run.project for run in runs]),
        _Column("status", "string", [live_status(run.metadata) for run in runs]),
        _Column("tags", "tags", [_tags(run) for run in runs]),
        _Column("start_time", "float", [_number(run.metadata.get("start_time")) for run in runs]),
        _Column(
            "duration",
            "float",
            [duration_of(run.metadata, summary) for run, summary in zip(runs, summaries, strict=True)],
        ),
    ]
    for key in dict.fromkeys(key for flat in params for key in flat):
        values = [flat.get(key) for flat in params]
        columns.append(_Column(f"params.{key}", _infer(values), values))
    stats_of: list[dict[str, Any]] = []
    for summary in summaries:
        stats = summary.get("metrics")
        stats_of.append(stats if isinstance(stats, dict) else {})
    names = (
        list(metrics) if metrics is not None else list(dict.fromkeys(n for stats in stats_of for n in stats))
    )
    for name in names:
        per_run = [entry if type(entry := stats.get(name)) is dict else _NO_STATS for stats in stats_of]
        for stat in STATS:
            key = ("min" if best_direction(name) == "min" else "max") if stat == "best" else stat
            if stat in _INTEGER_STATS:  # exact type checks: a damaged entry (a bool, a string) is missing
                values = [v if type(v := item.get(key)) is int else None for item in per_run]
                columns.append(_Column(f"metrics.{name}.{stat}", "int", values))
            else:
                values = [v if type(v := item.get(key)) in _REAL else None for item in per_run]
                columns.append(_Column(f"metrics.{name}.{stat}", "float", values))
    return _build(module, backend, columns, len(runs))


def history_frame(
    run: StoredRun,
    metrics: Sequence[str] | None = None,
    *,
    rank: int = 0,
    long: bool = False,
    backend: Backend = "pandas",
) -> Any:
    """The run's history: ``step``, ``time`` and one column per metric (default: every metric)."""
    module = _backend(backend)
    names = list(metrics) if metrics is not None else run.metrics(rank)
    if isinstance(metrics, str):
        raise ConfigError(f"metrics is a list of names, got the string {metrics!r}: write [{metrics!r}]")
    series = [run.history(name, rank) for name in names]
    if long:
        return _long(module, backend, names, series)
    return _wide(module, backend, names, series)


def _long(module: Any, backend: Backend, names: list[str], series: list[Any]) -> Any:
    sizes = [steps.size for steps, _, _ in series]
    metric = np.repeat(np.array(names, dtype=object), sizes) if names else np.array([], dtype=object)
    steps = np.concatenate([s for s, _, _ in series]) if series else np.array([], dtype=np.int64)
    times = np.concatenate([t for _, t, _ in series]) if series else np.array([], dtype=np.float64)
    values = np.concatenate([v for _, _, v in series]) if series else np.array([], dtype=np.float64)
    if backend == "polars":
        return module.DataFrame(
            {
                "metric": module.Series("metric", metric.tolist(), dtype=module.String),
                "step": module.Series("step", steps, dtype=module.Int64),
                "time": module.Series("time", times, dtype=module.Float64),
                "value": module.Series("value", values, dtype=module.Float64),
            }
        )
    return module.DataFrame(
        {
            "metric": module.array(metric.tolist(), dtype="string"),
            "step": np.array(steps, dtype=np.int64),
            "time": np.array(times, dtype=np.float64),
            "value": np.array(values, dtype=np.float64),
        }
    )


def _wide(module: Any, backend: Backend, names: list[str], series: list[Any]) -> Any:
    """Rows keyed by ``(step, k)``, k the point's place among its metric's points at that step."""
    keys = [np.column_stack([steps, _occurrence(steps)]) for steps, _, _ in series]
    stacked = np.concatenate(keys) if keys else np.empty((0, 2), dtype=np.int64)
    rows, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    times = np.full(rows.shape[0], np.inf)
    if series:
        np.minimum.at(times, inverse, np.concatenate([t for _, t, _ in series]))
    bounds = np.cumsum([0, *(steps.size for steps, _, _ in series)])
    columns: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]] = {}
    for at, (name, (_, _, values)) in enumerate(zip(names, series, strict=True)):
        where = inverse[bounds[at] : bounds[at + 1]]
        filled = np.zeros(rows.shape[0])
        missing = np.ones(rows.shape[0], dtype=bool)
        filled[where] = values
        missing[where] = False
        columns[name] = (filled, missing)
    steps = rows[:, 0].astype(np.int64)
    if backend == "polars":
        frame = {
            "step": module.Series("step", steps, dtype=module.Int64),
            "time": module.Series("time", times),
        }
        for name, (filled, missing) in columns.items():
            column = module.Series(name, filled, dtype=module.Float64)
            frame[name] = column.scatter(np.flatnonzero(missing), None) if missing.any() else column
        return module.DataFrame(frame)
    data: dict[str, Any] = {"step": steps, "time": times}
    for name, (filled, missing) in columns.items():
        data[name] = module.arrays.FloatingArray(filled, missing)
    return module.DataFrame(data)


def _occurrence(steps: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each point, how many points of the same series came before it at the same step."""
    order = np.argsort(steps, kind="stable")
    ordered = steps[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if ordered.size else np.array([], int)
    lengths = np.diff(np.r_[starts, ordered.size])
    place = np.arange(ordered.size) - np.repeat(starts, lengths)
    occurrence = np.empty(steps.size, dtype=np.int64)
    occurrence[order] = place
    return occurrence


def _backend(backend: str) -> Any:
    if backend == "pandas":
        try:
            import pandas
        except ImportError:
            raise MissingExtraError(
                "DataFrames need pandas: pip install 'runtel[frames]' (or pass backend='polars')"
            ) from None
        return pandas
    if backend == "polars":
        try:
            import polars
        except ImportError:
            raise MissingExtraError("backend='polars' needs polars: pip install 'runtel[polars]'") from None
        return polars
    raise ConfigError(f"backend is 'pandas' or 'polars', got {backend!r}")


def _build(module: Any, backend: Backend, columns: list[_Column], length: int) -> Any:
    if backend == "polars":
        return module.DataFrame([_polars_series(module, column) for column in columns], height=length)
    return module.DataFrame(
        {column.name: _pandas_array(module, column) for column in columns}, index=range(length)
    )


def _pandas_array(pandas: Any, column: _Column) -> Any:
    values, kind = column.values, column.kind
    missing = np.array([value is None for value in values], dtype=bool)
    if kind == "string":
        return pandas.array(values, dtype="string")
    if kind == "float":
        filled = np.array([0.0 if value is None else float(value) for value in values], dtype=np.float64)
        return pandas.arrays.FloatingArray(filled, missing)
    if kind == "int":
        filled_int = np.array([0 if value is None else value for value in values], dtype=np.int64)
        return pandas.arrays.IntegerArray(filled_int, missing)
    if kind == "bool":
        filled_bool = np.array([bool(value) for value in values], dtype=bool)
        return pandas.arrays.BooleanArray(filled_bool, missing)
    stored = np.empty(len(values), dtype=object)
    stored[:] = values
    return stored


def _polars_series(polars: Any, column: _Column) -> Any:
    dtype = {
        "string": polars.String,
        "float": polars.Float64,
        "int": polars.Int64,
        "bool": polars.Boolean,
        "tags": polars.List(polars.String),
        "object": polars.Object,
    }[column.kind]
    values = column.values
    if column.kind == "float":
        values = [None if value is None else float(value) for value in values]
    return polars.Series(column.name, values, dtype=dtype)


def _infer(values: list[Any]) -> Kind:
    """The one kind every present value of a param column has, or ``object``."""
    present = [value for value in values if value is not None]
    if not present:
        return "object"
    if all(isinstance(value, bool) for value in present):
        return "bool"
    if all(isinstance(value, str) for value in present):
        return "string"
    if any(isinstance(value, bool) or not isinstance(value, (int, float)) for value in present):
        return "object"
    if all(isinstance(value, int) for value in present):
        return "int" if all(_INT64[0] <= value <= _INT64[1] for value in present) else "object"
    exact = all(isinstance(value, float) or abs(value) <= _EXACT_FLOAT_INT for value in present)
    return "float" if exact else "object"


def _readable(run: StoredRun, found: dict[str, Any] | str, unreadable: list[str]) -> dict[str, Any]:
    if isinstance(found, dict):
        return found
    unreadable.append(f"{run.dir.name}/: {found}")
    return {}


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as ``a.b.c`` keys; an empty object stays one value."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{full}."))
        else:
            flat[full] = value
    return flat


def _tags(run: StoredRun) -> list[str]:
    tags = run.metadata.get("tags")
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
