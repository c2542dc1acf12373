"""What the comparison UI and the CLI show, read from the store: plain data, no Dash, no I/O beyond reads.

Every function here only reads. A run folder that is damaged (invalid JSON, torn series, missing files)
yields a row or a note that says so instead of an exception, so one bad folder never breaks a page.
Series reach the browser downsampled by :func:`minmax_indices` over the visible x-range only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from runtel import _health
from runtel.records import flatten_params
from runtel.store import _layout
from runtel.store.edits import EDITS
from runtel.store.query import StoredRun, best_direction, live_status
from runtel.store.scan import READ_ERRORS, listing_probe, problems, summary_of

#: Pixel buckets per chart: each keeps its min and max, so at most ``2 * DEFAULT_BUCKETS + 4`` points go out.
DEFAULT_BUCKETS = 1500
#: Block length of the vectorised EMA (a ``BLOCK x BLOCK`` kernel; larger blocks trade memory for speed).
_EMA_BLOCK = 256

XAxis = Literal["step", "time"]
FloatArray = npt.NDArray[np.float64]


def run_row(run: StoredRun, best_metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """One line of the runs table (also ``runtel ls --json``): identity, status, timing, size, best values
    (of ``best_metrics``, else of the two metrics :func:`best_from_summary` ranks first).

    Reads only what a listing needs (see :func:`runtel.store.scan.listing_probe`); ``problems`` holds
    what that read met. :func:`run_card` and ``runtel show`` probe the whole folder.
    """
    metadata = run.metadata
    start = _number(metadata.get("start_time"))
    status = live_status(metadata)
    summary, points, found = listing_probe(run, status)
    tags = metadata.get("tags")
    return {
        "id": run.id,
        "id8": run.id[:8],
        "name": run.name,
        "folder": run.dir.name,
        "project": run.project,
        "status": status,
        "start": start if start else None,
        "started": format_time(start) if start else "",
        "duration": _duration(metadata, summary, status),
        "points": points,
        "tags": [str(tag) for tag in tags] if isinstance(tags, list) else [],
        "note": metadata.get("note") or "",
        "best": best_from_summary(summary, limit=2, metrics=best_metrics),
        "problems": found,
    }


def _duration(metadata: dict[str, Any], summary: dict[str, Any], status: str) -> float | None:
    """Seconds: the recorded duration of a finished run, else up to the last heartbeat."""
    for value in (summary.get("duration"), metadata.get("duration")):
        if isinstance(value, (int, float)):
            return float(value)
    start = _number(metadata.get("start_time"))
    end = _number(metadata.get("end_time") or metadata.get("heartbeat"))
    return end - start if start and end >= start and status != "unreadable" else None


#: Words of the names a user watches first (held-out results of the objective) and of bookkeeping series.
_HELD_OUT = frozenset({"val", "valid", "validation", "eval", "evaluation", "test", "dev", "holdout"})
_OBJECTIVE = (
    "acc",
    "loss",
    "f1",
    "auc",
    "error",
    "bleu",
    "rouge",
    "perplexity",
    "map",
    "iou",
    "score",
    "reward",
)
_BOOKKEEPING = frozenset(
    {"lr", "epoch", "epochs", "step", "steps", "timing", "throughput", "norm", "samples"}
)


def best_from_summary(
    summary: dict[str, Any], limit: int | None = None, metrics: Sequence[str] | None = None
) -> dict[str, float]:
    """Best value of each metric of ``summary.json`` (lower is better for loss-like names).

    ``metrics`` chooses which; otherwise every non-system metric, those a user watches first:
    validation/test names, then accuracy/loss-like ones, with learning rate, timings and counters last.
    """
    stats = summary.get("metrics")
    best: dict[str, float] = {}
    if not isinstance(stats, dict):
        return best
    names = (
        list(metrics)
        if metrics is not None
        else sorted((name for name in stats if not str(name).startswith("system/")), key=_watch_rank)
    )
    for name in names:
        item = stats.get(name)
        if not isinstance(item, dict):
            continue
        value = item.get("min" if best_direction(name) == "min" else "max")
        if isinstance(value, (int, float)):
            best[name] = float(value)
        if limit is not None and len(best) >= limit:
            break
    return best


@functools.lru_cache(maxsize=4096)
def _watch_rank(name: str) -> int:
    """0 a held-out objective (``val/acc``), 1 another objective (``train/loss``), 2 anything else,
    3 bookkeeping (``lr``, ``timing/...``, ``epoch``); cached, as a listing ranks the same few names
    for every run."""
    lowered = name.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    if words & _BOOKKEEPING or "learning_rate" in lowered:
        return 3
    if any(word in lowered for word in _OBJECTIVE):
        return 0 if words & _HELD_OUT else 1
    return 2


def filter_rows(
    rows: Iterable[dict[str, Any]],
    *,
    projects: Sequence[str] = (),
    statuses: Sequence[str] = (),
    tags: Sequence[str] = (),
    name: str = "",
) -> list[dict[str, Any]]:
    """Rows matching every given filter: any of the projects, statuses and tags; name as a substring."""
    needle = name.strip().lower()
    return [
        row
        for row in rows
        if (not projects or row["project"] in projects)
        and (not statuses or row["status"] in statuses)
        and (not tags or set(tags) & set(row["tags"]))
        and (not needle or needle in row["name"].lower() or row["id"].startswith(needle))
    ]


@dataclass(frozen=True, slots=True)
class FilterBox:
    """What the runs table's text box selects: the runs kept, the text left for the name filter, the
    expression's error to show, and the run files it could not read (their fields count as missing)."""

    runs: list[StoredRun]
    name: str
    error: str | None = None
    unreadable: tuple[str, ...] = ()


def filter_box(runs: list[StoredRun], text: str) -> FilterBox:
    """The runs table's text box: a filter expression (``params.lr < 1e-3``) or a plain name/id filter.

    Text with a comparison or ``and``/``or``/``not``/``in`` is an expression; one that does not compile
    is still a name filter when some run's name holds it (``lr=0.1`` in a name), else its error is
    shown and no run is kept.
    """
    from runtel.errors import FilterSyntaxError
    from runtel.store.where import compile_where, looks_like_expression

    if not looks_like_expression(text):
        return FilterBox(runs, text)
    try:
        chosen = compile_where(text)
    except FilterSyntaxError as exc:
        needle = text.strip().lower()
        if any(needle in run.name.lower() for run in runs):
            return FilterBox(runs, text)
        return FilterBox([], "", str(exc))
    unreadable: list[tuple[str, str]] = []
    kept = chosen.select(runs, unreadable)
    notes = tuple(
        f"{folder}/: {why} (its fields count as missing in the filter)" for folder, why in unreadable
    )
    return FilterBox(kept, "", None, tuple(dict.fromkeys(notes)))


SORT_KEYS = ("start", "name", "status", "duration", "points", "project")


def sort_rows(rows: Iterable[dict[str, Any]], key: str, descending: bool = False) -> list[dict[str, Any]]:
    """Rows sorted by one column; missing values always last."""
    if key not in SORT_KEYS:
        key = "start"
    present = [row for row in rows if row[key] is not None]
    missing = [row for row in rows if row[key] is None]
    return sorted(present, key=lambda row: row[key], reverse=descending) + missing


@dataclass(frozen=True, slots=True)
class SeriesView:
    """What a chart draws of one series: ``x``/``y`` as sent, and how many points they stand for."""

    x: FloatArray
    y: FloatArray
    total: int
    visible: int

    @property
    def downsampled(self) -> bool:
        return self.x.size < self.visible

    def label(self, name: str) -> str:
        """The legend entry; says when fewer points were sent than the visible range holds."""
        if not self.downsampled:
            return name
        return f"{name} (downsampled {self.visible:,} → {self.x.size:,})"


def series_view(
    run: StoredRun,
    metric: str,
    *,
    x_axis: XAxis = "step",
    x_range: tuple[float, float] | None = None,
    smoothing: float = 0.0,
    buckets: int = DEFAULT_BUCKETS,
) -> SeriesView:
    """The points of ``metric`` to draw for ``x_range`` (default: all), sorted by x.

    ``x_axis="time"`` is seconds since the run started, so runs overlay from zero. Smoothing (EMA) is
    applied to the whole series before cutting the range, so a zoomed view shows the same curve.
    """
    steps, times, values = run.history(metric)
    if x_axis == "time":
        start = _number(run.metadata.get("start_time")) or (float(times[0]) if times.size else 0.0)
        x = times - start
    else:
        x = steps.astype(np.float64)
    y = ema(values, smoothing) if smoothing > 0 else values
    if x.size > 1 and bool(np.any(x[1:] < x[:-1])):  # a step went backwards: draw by x
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
    if x.size == 0:
        return SeriesView(x, y, 0, 0)
    lo, hi = x_range if x_range is not None else (float(x[0]), float(x[-1]))
    first = int(np.searchsorted(x, lo, side="left"))
    stop = int(np.searchsorted(x, hi, side="right"))
    picked = minmax_indices(x[first:stop], y[first:stop], buckets) + first
    neighbours = [index for index in (first - 1, stop) if 0 <= index < x.size]  # lines run on to the edges
    chosen = np.union1d(picked, np.asarray(neighbours, dtype=np.int64))
    return SeriesView(x[chosen], y[chosen], int(x.size), stop - first)


def minmax_indices(x: FloatArray, y: FloatArray, buckets: int = DEFAULT_BUCKETS) -> npt.NDArray[np.int64]:
    """Indices to draw of an x-sorted series: the min and max of each of ``buckets`` equal x-intervals.

    The first and last point are always kept, so is every extreme, so no spike disappears. An
    interval holding only NaN keeps one NaN, which draws as a gap. Costs a few passes over the data.
    """
    n = x.size
    if n <= 2 * buckets + 2:
        return np.arange(n, dtype=np.int64)
    lo, hi = float(x[0]), float(x[-1])
    edges = lo + (hi - lo) * np.arange(buckets) / buckets if hi > lo else np.array([lo])
    starts = np.unique(np.searchsorted(x, edges, side="left"))
    starts = starts[starts < n]
    counts = np.diff(np.append(starts, n))
    bucket_of = np.repeat(np.arange(starts.size), counts)
    picked = [np.array([0, n - 1]), starts[np.isnan(np.fmin.reduceat(y, starts))]]
    for reduce in (np.fmin, np.fmax):
        extreme = reduce.reduceat(y, starts)
        hits = np.flatnonzero(y == extreme[bucket_of])
        owner = bucket_of[hits]
        picked.append(hits[np.r_[True, owner[1:] != owner[:-1]]] if hits.size else hits)
    return np.unique(np.concatenate(picked)).astype(np.int64)


def ema(values: npt.ArrayLike, weight: float) -> FloatArray:
    """Debiased exponential moving average (TensorBoard's smoothing); non-finite points are skipped.

    ``out[t] = sum(w^(t-k) * v[k]) / sum(w^(t-k))`` over the finite ``v[k]``, ``k <= t``; a non-finite
    input stays NaN in the output (a gap). Vectorised in blocks, so 1,000,000 points take tens of ms.
    """
    v = np.asarray(values, dtype=np.float64)
    if not 0.0 < weight < 1.0 or v.size == 0:
        return v.copy()
    finite = np.isfinite(v)
    n, size = v.size, _EMA_BLOCK
    blocks = -(-n // size)
    channels = np.zeros((2, blocks * size))
    channels[0, :n] = np.where(finite, v, 0.0)
    channels[1, :n] = finite
    lag = np.arange(size)[:, None] - np.arange(size)[None, :]
    kernel = np.where(lag >= 0, weight ** np.maximum(lag, 0), 0.0)  # kernel[i, k] = w^(i-k)
    inside = channels.reshape(2, blocks, size) @ kernel.T  # each block as if it started from zero
    carried = np.empty((2, blocks))
    state = np.zeros(2)
    decay = weight**size
    for block in range(blocks):
        carried[:, block] = state
        state = inside[:, block, -1] + decay * state
    full = inside + carried[:, :, None] * (weight ** np.arange(1, size + 1))[None, None, :]
    numerator, weights = full[0].ravel()[:n], full[1].ravel()[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = numerator / weights
    out[~finite] = np.nan
    return out


def params_of(run: StoredRun) -> dict[str, Any]:
    """The run's hyperparameters, or ``{}`` when ``hyperparameters.json`` is damaged (a listed problem)."""
    params: dict[str, Any] = _safe(run.params, {})
    return params


def params_rows(runs: Sequence[StoredRun]) -> list[dict[str, Any]]:
    """One row per flattened parameter: ``key``, ``values`` (one per run, None where absent), ``differs``."""
    flat = [flatten_params(params_of(run)) for run in runs]
    keys = sorted({key for params in flat for key in params})
    rows = []
    for key in keys:
        values = [params.get(key) for params in flat]
        shown = {json.dumps(value, sort_keys=True, default=str) for value in values}
        rows.append({"key": key, "values": values, "differs": len(shown) > 1})
    return rows


def run_card(run: StoredRun) -> dict[str, Any]:
    """The summary card of a run: status, duration, points, each exporter's status and adaptations.

    ``problems`` is the full damage probe (CRCs included) of a finished run; a live run, redrawn at
    each refresh, gets the listing's cheaper one.
    """
    row = run_row(run)
    summary = summary_of(run)
    reports = summary.get("exporters") if isinstance(summary, dict) else None
    exporters: dict[str, dict[str, Any]] = {}
    for name, report in (reports or {}).items():
        if not isinstance(report, dict):
            continue
        adaptations = report.get("adaptations") or {}
        exporters[str(name)] = {
            "status": str(report.get("status", "unknown")),
            "error": report.get("error"),
            "adaptations": {
                str(kind): int(item.get("count", 0)) if isinstance(item, dict) else int(item)
                for kind, item in adaptations.items()
            },
        }
    live = _health.read_live(run.dir) if not exporters else {}
    for name, reading in live.items():  # a live run: its exporters' health of the last heartbeat
        exporters[name] = {"status": reading["status"], "error": None, "adaptations": {}}
    return {
        "id": run.id,
        "name": run.name,
        "problems": row["problems"] if row["status"] == "running" else problems(run),
        "status": row["status"],
        "duration": row["duration"],
        "points": row["points"],
        "error": summary.get("error") if isinstance(summary, dict) else None,
        "exporters": exporters,
        "live": live,
        "adaptations": sum(sum(item["adaptations"].values()) for item in exporters.values()),
    }


def best_values(runs: Sequence[StoredRun], metrics: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``{metric: [{"run", "id", "best", "step"}, ...]}`` from the full series (NaN-skipping, auto mode)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for metric in metrics:
        for run in runs:
            try:
                best, step = run.best(metric)
            except READ_ERRORS:
                continue
            if not math.isnan(best):
                out.setdefault(metric, []).append({"run": run.name, "id": run.id, "best": best, "step": step})
    return out


def metric_names(runs: Sequence[StoredRun]) -> list[str]:
    """Every metric of any of the runs, in first-seen order."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(_safe(run.metrics, [])))
    return list(names)


def span_rows(run: StoredRun) -> list[dict[str, Any]]:
    """Epochs and phases (not the run span), oldest first: start as seconds since the run started."""
    start = _number(run.metadata.get("start_time"))
    spans = _safe(run.spans, [])
    rows = [
        {
            "name": span.name,
            "kind": str(span.kind),
            "start": span.start_time - start if start else 0.0,
            "duration": span.end_time - span.start_time,
            "status": span.status,
            "steps": _step_range(span.attributes),
        }
        for span in spans
        if str(span.kind) != "run"
    ]
    return sorted(rows, key=lambda row: row["start"])


def _step_range(attributes: dict[str, Any]) -> str:
    first, last = attributes.get("runtel.step_start"), attributes.get("runtel.step_end")
    if first is None:
        return ""
    return str(first) if last in (None, first) else f"{first}-{last}"


def artifact_rows(run: StoredRun) -> list[dict[str, Any]]:
    """Every stored version of every artifact: name, version, full sha256, size, creation time."""
    artifacts: dict[str, list[Any]] = _safe(run.artifacts, {})
    return [
        {
            "name": name,
            "version": item.version,
            "sha256": item.checksum,
            "size": item.size,
            "created_at": item.created_at,
        }
        for name, versions in artifacts.items()
        for item in versions
    ]


def fingerprint(base_dir: str | os.PathLike[str], runs: Iterable[StoredRun] = ()) -> str:
    """Changes when a run appears or goes, or anything its runs-table row shows changes: drives live refresh.

    Only ``stat`` calls: ``metadata.json``, ``summary.json`` and ``edits.jsonl`` of every run (status,
    duration, best values, tags), plus the events and series files of runs still marked running
    (points, spans, charts).
    """
    base = Path(base_dir)
    parts: list[str] = []
    try:
        parts.append(",".join(sorted(entry.name for entry in base.iterdir())))
    except OSError:
        parts.append("-")
    for run in runs:
        parts.extend(
            (_stamp(run.dir / _layout.METADATA), _stamp(run.dir / _layout.SUMMARY), _stamp(run.dir / EDITS))
        )
        if run.metadata.get("status") != "running":
            continue
        parts.append(_stamp(run.dir / _layout.EVENTS))
        metrics_dir = run.dir / _layout.METRICS_DIR
        try:
            parts.extend(_stamp(path) for path in sorted(metrics_dir.iterdir()))
        except OSError:
            parts.append("-")
    return str(hash("|".join(parts)))


def _stamp(path: Path) -> str:
    try:
        info = path.stat()
    except OSError:
        return "-"
    return f"{info.st_size}:{info.st_mtime_ns}"


def format_time(timestamp: float) -> str:
    """Local date and time to the second, as people read it in a table."""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _safe(read: Any, default: Any) -> Any:
    """``read()``, or ``default`` when the run folder is damaged in a way a reader can meet."""
    try:
        return read()
    except READ_ERRORS:
        return default
