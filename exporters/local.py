"""The local versioned store as an exporter: always on, first in line, the source of truth.

It writes a seed-compatible run folder (``metadata.json``, ``hyperparameters.json``,
``summary.json``, ``events.jsonl``, ``metrics/``) from the record stream, so what a live
run writes and what a replay would write are the same thing.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtel.exporters.base import Capabilities, ExportResult
from runtel.records import SERIES_DTYPE, Heartbeat, MetricPoints, ParamsLogged, Record, RunEnded, RunStarted
from runtel.store import _layout
from runtel.store._events import is_event, to_line
from runtel.store._jsonio import read_json, write_json_atomic
from runtel.store._series import SeriesWriter, series_stats


class LocalStoreExporter:
    name = "local"
    capabilities = Capabilities()

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._series = SeriesWriter(self.run_dir / _layout.METRICS_DIR)
        self._events = (self.run_dir / _layout.EVENTS).open("a", encoding="utf-8")
        self._metadata: dict[str, Any] = read_json(self.run_dir / _layout.METADATA, default={})
        self._params: dict[str, Any] = read_json(self.run_dir / _layout.HYPERPARAMETERS, default={})
        self._stats: dict[str, dict[str, Any]] = read_json(self.run_dir / _layout.SUMMARY, default={}).get(
            "metrics", {}
        ) or series_stats(self.run_dir / _layout.METRICS_DIR)

    def export(self, records: Sequence[Record]) -> ExportResult:
        for record in records:
            if isinstance(record, MetricPoints):
                self._write_points(record)
                continue
            if isinstance(record, Heartbeat):
                self._metadata["heartbeat"] = record.time
                self._write_metadata(fsync=False)
                continue
            if is_event(record):
                self._events.write(to_line(record) + "\n")
            if isinstance(record, RunStarted):
                self._start(record)
            elif isinstance(record, ParamsLogged):
                _deep_merge(self._params, record.params)
                write_json_atomic(self.run_dir / _layout.HYPERPARAMETERS, self._params)
            elif isinstance(record, RunEnded):
                self._end(record)
        self._series.flush()
        self._events.flush()
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self._series.flush()
        self._events.flush()
        return True

    def shutdown(self) -> None:
        self._series.close()
        self._events.flush()
        os.fsync(self._events.fileno())
        self._events.close()

    def metric_stats(self) -> dict[str, dict[str, Any]]:
        """Count, min, max and last value/step/time of every series written so far (a copy)."""
        return {name: dict(stats) for name, stats in self._stats.items()}

    def write_exporter_reports(self, reports: dict[str, dict[str, Any]]) -> None:
        """Add what happened to each exporter to ``summary.json`` (called after all exporters stopped)."""
        summary = read_json(self.run_dir / _layout.SUMMARY, default={})
        summary["exporters"] = reports
        write_json_atomic(self.run_dir / _layout.SUMMARY, summary)

    def next_step(self) -> int:
        """The step after the last one stored (0 for a new run): where a resumed run continues."""
        return max((int(stats["last_step"]) + 1 for stats in self._stats.values()), default=0)

    def _start(self, record: RunStarted) -> None:
        _deep_merge(self._params, record.config)
        write_json_atomic(self.run_dir / _layout.HYPERPARAMETERS, self._params)
        pid = int(record.resource.get("process.pid", os.getpid()))
        if record.resumed:
            self._metadata.setdefault("resumed_at", []).append(_iso(record.start_time))
        else:
            self._metadata.update({"created_at": _iso(record.start_time), "start_time": record.start_time})
        self._metadata.update(
            {
                "id": record.run_id,
                "experiment_id": record.run_id,
                "trace_id": record.run_id,
                "name": record.name,
                "experiment_name": record.name,
                "project": record.project,
                "status": "running",
                "heartbeat": record.start_time,
                "rank": record.resource.get("rank", 0),
                "world_size": record.resource.get("world_size", 1),
                "tags": list(record.tags),
                "host": record.resource.get("host.name", platform.node()),
                "pid": pid,
                "process_start_time": _process_start_time(pid),
                "python": sys.version.split()[0],
                "runtel_version": record.resource.get("runtel.version"),
                "git_commit": _git_commit(),
            }
        )
        self._write_metadata(fsync=True)

    def _end(self, record: RunEnded) -> None:
        self._metadata.update(
            {
                "status": record.status,
                "end_time": record.end_time,
                "ended_at": _iso(record.end_time),
                "duration": record.end_time - float(self._metadata.get("start_time", record.end_time)),
                "heartbeat": record.end_time,
            }
        )
        summary = {
            "status": record.status,
            "duration": self._metadata["duration"],
            "error": record.error,
            **record.summary,
            "metrics": self._stats,
        }
        self._series.flush()
        write_json_atomic(self.run_dir / _layout.SUMMARY, summary)
        self._write_metadata(fsync=True)

    def _write_points(self, points: MetricPoints) -> None:
        columns = {}
        for name, positions in points.by_name().items():
            records = np.empty(positions.size, dtype=SERIES_DTYPE)
            records["step"] = points.steps[positions]
            records["time"] = points.times[positions]
            records["value"] = points.values[positions]
            records["span_id"] = points.span_ids[positions]
            columns[name] = records
            self._update_stats(name, records)
        self._series.append(columns)

    def _update_stats(self, name: str, records: np.ndarray) -> None:
        values = records["value"]
        stats = self._stats.get(name)
        low, high = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))
        if stats is None:
            stats = self._stats[name] = {"count": 0, "min": low, "max": high}
        else:
            stats["min"] = _fmin(stats["min"], low)
            stats["max"] = _fmax(stats["max"], high)
        stats["count"] += int(values.size)
        stats["last"] = float(values[-1])
        stats["last_step"] = int(records["step"][-1])
        stats["last_time"] = float(records["time"][-1])

    def _write_metadata(self, *, fsync: bool) -> None:
        write_json_atomic(self.run_dir / _layout.METADATA, self._metadata, fsync=fsync)


def _deep_merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def _fmin(a: float | None, b: float) -> float:
    return b if a is None else float(np.fmin(a, b))


def _fmax(a: float | None, b: float) -> float:
    return b if a is None else float(np.fmax(a, b))


def _iso(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).isoformat()


def _process_start_time(pid: int) -> float | None:
    """Lets a reader tell our process from a later one that reused the pid."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
