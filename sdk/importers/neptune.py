"""Import neptune 1.x offline and async runs from their operation logs (``data-*.log``).

Operations are parsed with neptune's own ``JsonFileSplitter`` and ``Operation.from_dict`` and folded
in version order: ``parameters/...`` atoms become the config (without the prefix), other atoms keep
their path; float series become series (``monitoring/<id>/<name>`` as the system series
``system/<name>``); ``sys/name``, ``sys/description``, ``sys/tags`` and ``sys/failed`` give the name,
notes, tags and status; uploaded files go to the artifact store. String and image series and
operations with no place in the store are reported as skipped.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from runtel.errors import ConfigError, MissingExtraError
from runtel.importers._source import (
    ImportReport,
    Pending,
    Series,
    Skipped,
    SourceFile,
    SourceRun,
    fingerprint_of,
)

SOURCE = "neptune"
_PARAMETERS = "parameters"


def discover(path: str | None, **options: Any) -> Iterator[Pending | Skipped]:
    """Every folder holding an operation log at or under ``path`` (``.neptune``, its parent, one run)."""
    if options:
        raise ConfigError(f"the Neptune importer takes no options; got {sorted(options)}")
    _require()
    if path is None:
        raise ConfigError("name the Neptune data folder to import, e.g. runtel import neptune ./.neptune")
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"no Neptune data folder at {str(root)!r} (no such folder)")
    folders = sorted({log.parent for log in root.glob("**/data-*.log")})
    if not folders:
        yield Skipped(str(root), "no neptune operation logs (data-*.log) here or below")
    for folder in folders:
        logs = sorted(folder.glob("data-*.log"))
        container = _container_id(folder)
        if container is None:
            yield Skipped(str(folder), "not a neptune run folder (no run metadata.json or run__<id> name)")
            continue
        yield Pending(
            source=SOURCE,
            source_id=container,
            source_path=str(folder),
            fingerprint=fingerprint_of(logs),
            load=partial(read_run, folder, logs, container),
        )


def read_run(folder: Path, logs: list[Path], container: str) -> SourceRun:
    from neptune.core.components.queue.json_file_splitter import JsonFileSplitter
    from neptune.internal import operation as ops

    run = SourceRun(SOURCE, "", str(folder), container, "", math.inf, 0.0)
    report = run.report
    lines: list[dict[str, Any]] = []
    for log in sorted(logs, key=lambda p: int(p.stem.split("-")[-1])):
        with JsonFileSplitter(log) as splitter:
            while (line := splitter.get()) is not None:
                lines.append(line)
    points: dict[str, list[tuple[int, float, float]]] = {}
    config: dict[str, Any] = {}
    failed = False
    # Operation.from_dict looks up every subclass on each call; the same lookup, done once:
    finder: Any = ops.all_subclasses
    kinds = {kind.__name__: kind for kind in finder(ops.Operation)}
    for line in sorted(lines, key=lambda item: int(item.get("version", 0))):
        kind = kinds.get(line["obj"].get("type"))
        if kind is None:
            report.add("operation_skipped", 1, {"operation": line["obj"].get("type")})
            continue
        operation = kind.from_dict(line["obj"])
        at = float(line.get("at") or 0.0)
        run.start_time, run.end_time = min(run.start_time, at), max(run.end_time, at)
        path = "/".join(operation.path)
        if isinstance(operation, ops.AssignString | ops.AssignFloat | ops.AssignInt | ops.AssignBool):
            failed = _atom(run, config, path, operation.value, failed)
        elif isinstance(operation, ops.AssignDatetime):
            _atom(run, config, path, operation.value.isoformat(), failed)
        elif isinstance(operation, ops.AddStrings) and path == "sys/tags":
            run.tags = (*run.tags, *(tag for tag in operation.values if tag not in run.tags))
        elif isinstance(operation, ops.LogFloats):
            _floats(points, report, _series_name(path), operation.values)
        elif isinstance(operation, ops.ClearFloatLog):
            points.pop(_series_name(path), None)
        elif isinstance(operation, ops.UploadFile):
            _upload(run, folder, path, operation, at)
        elif isinstance(operation, ops.UploadFileSet):
            _upload_set(run, path, operation.file_globs, at)
        elif isinstance(operation, ops.LogStrings | ops.LogImages):
            kind = "console_skipped" if path.startswith("monitoring/") else "string_or_image_series_skipped"
            report.add(kind, len(operation.values), {"field": path})
        elif not isinstance(operation, ops.ConfigFloatSeries | ops.ClearStringLog | ops.ClearImageLog):
            report.add("operation_skipped", 1, {"operation": type(operation).__name__, "field": path})
    run.config = config
    run.start_time = min(run.start_time, run.end_time)
    run.metrics = {
        key: Series(
            np.asarray([p[0] for p in found], dtype=np.int64),
            np.asarray([p[1] for p in found], dtype=np.float64),
            np.asarray([p[2] for p in found], dtype=np.float64),
        )
        for key, found in points.items()
    }
    if failed:
        run.status, run.error = "failed", "sys/failed was set"
    report.add("status_assumed", 0 if failed else 1, {"status": "completed", "why": "sys/failed was not set"})
    return run


def _require() -> None:
    try:
        import neptune.internal.operation  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "importing Neptune runs needs neptune 1.x: pip install runtel[neptune]"
        ) from exc


def _container_id(folder: Path) -> str | None:
    try:
        metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metadata = None
    if isinstance(metadata, dict) and isinstance(metadata.get("containerId"), str):
        return str(metadata["containerId"])
    for part in (folder.name, folder.parent.name):
        pieces = part.split("__")
        if pieces[0] == "run" and len(pieces) >= 2:
            return pieces[1]
    return None


def _atom(run: SourceRun, config: dict[str, Any], path: str, value: Any, failed: bool) -> bool:
    """Apply one atom; returns whether the run is marked failed."""
    if path == "sys/name":
        run.name = str(value)
    elif path == "sys/description":
        run.notes = str(value) or None
    elif path == "sys/failed":
        return bool(value)
    elif path.startswith(("sys/", "monitoring/", "source_code/")):
        run.source_metadata[path] = value
        if path.startswith("monitoring/") and path.endswith("/hostname"):
            run.host = str(value)
    else:
        parts = path.split("/")
        if parts[0] == _PARAMETERS and len(parts) > 1:
            parts = parts[1:]
        target = config
        for part in parts[:-1]:
            child = target.get(part)
            target = target.setdefault(part, {}) if not isinstance(child, dict) else child
            if not isinstance(target, dict):
                break
        target[parts[-1]] = value
    return failed


def _series_name(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "monitoring" and len(parts) >= 3:
        return "system/" + "/".join(parts[2:])
    return path


def _floats(
    points: dict[str, list[tuple[int, float, float]]], report: ImportReport, name: str, values: list[Any]
) -> None:
    found = points.setdefault(name, [])
    for value in values:
        step = value.step
        if step is None:
            step = found[-1][0] + 1 if found else 0
            report.add("step_missing", 1, {"metric": name, "step_given": step})
        elif float(step) != int(step):
            report.add("step_rounded", 1, {"metric": name, "step": step})
        found.append((int(step), float(value.ts), float(value.value)))


def _upload(run: SourceRun, folder: Path, path: str, operation: Any, at: float) -> None:
    if operation.tmp_file_name:  # a copy neptune kept in the run folder: it must stay inside it
        source = folder / "upload_path" / operation.tmp_file_name
        inside = source.resolve().is_relative_to(folder.resolve())
    else:  # neptune kept only the path of the user's file
        source, inside = Path(operation.file_path or ""), True
    if not inside or not source.is_file():
        run.report.add("file_missing", 1, {"field": path, "file": str(source)})
        return
    name = f"{path}.{operation.ext}" if operation.ext else path
    run.files.append(SourceFile(source, name, at, metadata={"neptune_field": path}))


def _upload_set(run: SourceRun, path: str, globs: list[str], at: float) -> None:
    for pattern in globs:
        matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True))
        if not matches:
            run.report.add("file_missing", 1, {"field": path, "file": pattern})
        for match in matches:
            if match.is_file():
                name = f"{path}/{match.name}"
                run.files.append(SourceFile(match, name, at, metadata={"neptune_field": path}))
