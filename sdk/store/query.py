"""Reading runs back: no server, works on finished runs and on runs still being written."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psutil

from runtel.errors import MetricNotFoundError, RunNotFoundError
from runtel.records import Record, SpanEnded
from runtel.store import _layout
from runtel.store._events import from_line
from runtel.store._jsonio import read_json
from runtel.store._series import read_index, read_series
from runtel.sweep import SweepInfo, sweep_info

#: A run whose heartbeat is older than this, on another host, is shown as crashed.
STALE_HEARTBEAT_SECONDS = 300.0

Mode = Literal["min", "max", "auto"]
_LOWER_IS_BETTER = ("loss", "error", "err", "perplexity", "mse", "mae", "rmse", "wer", "cer")


class StoredRun:
    """One run folder, read lazily; every call re-reads disk, so a live run shows new data.

    ``ValueError`` when ``metadata.json`` is not valid JSON or not runtel's (see :func:`metadata_problem`).
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        metadata = read_json(run_dir / _layout.METADATA, default={})
        problem = metadata_problem(metadata)
        if problem is not None:
            raise ValueError(f"{run_dir}: {problem}")
        self.metadata: dict[str, Any] = metadata
        self.id: str = metadata.get("id") or ""
        self.name: str = metadata.get("name") or run_dir.name
        self.project: str = metadata.get("project") or ""

    @property
    def sweep(self) -> SweepInfo | None:
        """The sweep this run is, or is a trial of (None outside sweeps or when the block is malformed)."""
        return sweep_info(self.metadata)

    def __repr__(self) -> str:
        return f"StoredRun(name={self.name!r}, id={self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        """``running`` only while the writing process is alive; a dead writer shows ``crashed``."""
        metadata = read_json(self.dir / _layout.METADATA, default=self.metadata)
        status = metadata.get("status") if isinstance(metadata, dict) else None
        if not isinstance(status, str):
            return "unknown"
        if status == "running" and not _writer_alive(metadata):
            return "crashed"
        return status

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = read_json(self.dir / _layout.HYPERPARAMETERS, default={})
        return params

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = read_json(self.dir / _layout.SUMMARY, default={})
        return summary

    def ranks(self) -> dict[int, str]:
        """Status of each rank of a distributed run (``{0: status}`` for a single process)."""
        statuses = {0: self.status}
        for folder in sorted((self.dir / "ranks").glob("*")):
            if folder.name.isdigit():
                statuses[int(folder.name)] = StoredRun(folder).status
        return statuses

    def metrics(self, rank: int = 0) -> list[str]:
        """Names of the run's metric series, in the order they first appeared."""
        return list(read_index(self._rank_dir(rank) / _layout.METRICS_DIR))

    def history(
        self, metric: str, rank: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(steps, times, values)`` of every point of ``metric``, in logging order (of ``rank``)."""
        records = self._records(metric, rank)
        return (
            np.ascontiguousarray(records["step"]),
            np.ascontiguousarray(records["time"]),
            np.ascontiguousarray(records["value"]),
        )

    def span_ids(self, metric: str, rank: int = 0) -> npt.NDArray[np.uint64]:
        """The OTel span id each point was logged under (the run span's id outside any phase)."""
        return np.ascontiguousarray(self._records(metric, rank)["span_id"])

    def best(self, metric: str, mode: Mode = "auto") -> tuple[float, int]:
        """``(value, step)`` of the best point; NaN points are skipped (all NaN: ``(nan, first step)``)."""
        steps, _, values = self.history(metric)
        if values.size == 0:
            raise MetricNotFoundError(f"metric {metric!r} of run {self.name} has no points yet")
        if np.isnan(values).all():
            return math.nan, int(steps[0])
        direction = best_direction(metric, mode)
        position = int(np.nanargmin(values) if direction == "min" else np.nanargmax(values))
        return float(values[position]), int(steps[position])

    def last(self, metric: str) -> tuple[float, int]:
        steps, _, values = self.history(metric)
        if values.size == 0:
            raise MetricNotFoundError(f"metric {metric!r} of run {self.name} has no points yet")
        return float(values[-1]), int(steps[-1])

    def events(self, rank: int = 0) -> Iterator[Record]:
        """Every non-metric record (params, spans, artifacts, ...) in logging order."""
        try:
            handle = (self._rank_dir(rank) / _layout.EVENTS).open(encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                record = from_line(line)
                if record is not None:
                    yield record

    def spans(self) -> list[SpanEnded]:
        """Every ended span of every rank (one trace), in start order."""
        found = [
            record for rank in self.ranks() for record in self.events(rank) if isinstance(record, SpanEnded)
        ]
        return sorted(found, key=lambda span: span.start_time)

    def _rank_dir(self, rank: int) -> Path:
        return self.dir if rank == 0 else self.dir / "ranks" / str(rank)

    def _records(self, metric: str, rank: int = 0) -> npt.NDArray[np.void]:
        directory = self._rank_dir(rank)
        index = read_index(directory / _layout.METRICS_DIR)
        file_name = index.get(metric)
        if file_name is None:
            raise MetricNotFoundError(
                f"run {self.name} has no metric {metric!r}; it has: {', '.join(sorted(index)) or 'none'}"
            )
        return read_series(directory / _layout.METRICS_DIR / file_name)


class Store:
    """All runs under one base folder (default ``runtel_runs``, or ``RUNTEL_BASE_DIR``)."""

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        self.base_dir = Path(base_dir or os.environ.get("RUNTEL_BASE_DIR", "runtel_runs"))

    def runs(
        self,
        *,
        project: str | None = None,
        status: str | None = None,
        name: str | None = None,
        sweep: str | None = None,
    ) -> list[StoredRun]:
        """Runs with a readable ``metadata.json``, oldest first; folders that are not runs are skipped.

        ``sweep`` (a sweep's name or id) keeps that sweep's run and its trials (see :mod:`runtel.sweep`).
        """
        found: list[StoredRun] = []
        if not self.base_dir.is_dir():
            return found
        for entry in sorted(self.base_dir.iterdir()):
            if not (entry / _layout.METADATA).is_file():
                continue
            try:
                run = StoredRun(entry)
            except ValueError:
                continue
            if not run.id:
                continue
            if project is not None and run.project != project:
                continue
            if name is not None and run.name != name:
                continue
            if status is not None and run.status != status:
                continue
            if sweep is not None and sweep not in _sweep_keys(run):
                continue
            found.append(run)
        found.sort(key=lambda run: float(run.metadata.get("start_time", 0.0)))
        return found

    def run(self, key: str) -> StoredRun:
        """A run by full id, id prefix (8+ characters), folder name or run name (the latest of that name)."""
        runs = self.runs()
        for run in runs:
            if key in (run.id, run.dir.name):
                return run
        if len(key) >= 8:
            prefixed = [run for run in runs if run.id.startswith(key)]
            if len(prefixed) == 1:
                return prefixed[0]
        named = [run for run in runs if run.name == key]
        if named:
            return named[-1]
        raise RunNotFoundError(f"no run {key!r} in {self.base_dir} ({len(runs)} runs there)")

    def compare(
        self, runs: Sequence[str | StoredRun], metrics: Sequence[str] | None = None, mode: Mode = "auto"
    ) -> list[dict[str, Any]]:
        """One row per (run, metric): best, best_step, last, min, max, count. Missing metrics are skipped."""
        rows = []
        for item in runs:
            run = item if isinstance(item, StoredRun) else self.run(item)
            for metric in metrics if metrics is not None else run.metrics():
                try:
                    values = run.history(metric)[2]
                except MetricNotFoundError:
                    continue
                if values.size == 0:
                    continue
                best, best_step = run.best(metric, mode)
                rows.append(
                    {
                        "run_id": run.id,
                        "name": run.name,
                        "metric": metric,
                        "best": best,
                        "best_step": best_step,
                        "last": float(values[-1]),
                        "min": float(np.fmin.reduce(values)),
                        "max": float(np.fmax.reduce(values)),
                        "count": int(values.size),
                    }
                )
        return rows


def _sweep_keys(run: StoredRun) -> tuple[str, ...]:
    info = run.sweep
    return (info.id, info.name) if info is not None else ()


def metadata_problem(metadata: object) -> str | None:
    """Why a parsed ``metadata.json`` cannot be read as a run (another tool's file), or None.

    Readers rely on ``id``, ``name`` and ``project`` being strings where present: sorting, filtering and
    tables would otherwise fail on a folder runtel never wrote.
    """
    if not isinstance(metadata, dict):
        return "metadata.json is not a JSON object"
    for key in ("id", "name", "project"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            return f"metadata.json field {key!r} is {type(value).__name__}, not a string"
    return None


def best_direction(metric: str, mode: Mode = "auto") -> Literal["min", "max"]:
    """``min`` or ``max``: ``auto`` means lower is better for names with loss, error, perplexity..."""
    if mode in ("min", "max"):
        return mode
    lowered = metric.lower()
    return "min" if any(word in lowered for word in _LOWER_IS_BETTER) else "max"


def _writer_alive(metadata: dict[str, Any]) -> bool:
    if metadata.get("host") == platform.node():
        pid = metadata.get("pid")
        if not isinstance(pid, int):
            return False
        try:
            process = psutil.Process(pid)
            started = metadata.get("process_start_time")
            return started is None or abs(process.create_time() - float(started)) < 1.0
        except psutil.Error:
            return False
    heartbeat = float(metadata.get("heartbeat", 0.0))
    return time.time() - heartbeat < STALE_HEARTBEAT_SECONDS
