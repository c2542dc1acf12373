"""What ``metadata.json`` and ``hyperparameters.json`` say about a run, kept in memory by the writer."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any

from runtel.records import RunEnded, RunStarted
from runtel.sweep import metadata_from_resource


def apply_started(metadata: dict[str, Any], record: RunStarted) -> None:
    """The run's identity, host and process, as the seed layout has them; a resume is appended."""
    pid = int(record.resource.get("process.pid", os.getpid()))
    if record.resumed:
        metadata.setdefault("resumed_at", []).append(_iso(record.start_time))
    else:
        metadata.update({"created_at": _iso(record.start_time), "start_time": record.start_time})
    metadata.update(
        {
            "id": record.run_id,
            "experiment_id": record.run_id,
            "trace_id": record.run_id,
            "name": record.name,
            "experiment_name": record.name,
            "project": record.project,
            "status": "running",
            "heartbeat": record.start_time,
            "rank": record.resource.get("runtel.rank", 0),
            "world_size": record.resource.get("runtel.world_size", 1),
            "tags": list(record.tags),
            "host": record.resource.get("host.name", platform.node()),
            "pid": pid,
            "process_start_time": _process_start_time(pid),
            "python": sys.version.split()[0],
            "runtel_version": record.resource.get("runtel.version"),
            "git_commit": record.resource.get("vcs.ref.head.revision"),  # found once, by the run
        }
    )
    sweep = metadata_from_resource(record.resource)
    if sweep is not None:
        metadata["sweep"] = sweep


def apply_ended(metadata: dict[str, Any], record: RunEnded) -> None:
    start = metadata.get("start_time")
    metadata.update(
        {
            "status": record.status,
            "end_time": record.end_time,
            "ended_at": _iso(record.end_time),
            "duration": record.end_time
            - (float(start) if isinstance(start, int | float) else record.end_time),
            "heartbeat": record.end_time,
        }
    )


def deep_merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    """Nested dicts merged key by key (later ``log_params`` calls refine earlier ones)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = value


def _iso(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).isoformat()


def _process_start_time(pid: int) -> float | None:
    """Lets a reader tell our process from a later one that reused the pid."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None
