"""Read a Neptune 1.x offline run back from its operation log (``data-*.log``).

Each line is ``{"obj": <operation>, "version": n, "at": t}``; the operation is decoded
with Neptune's own ``Operation.from_dict`` and folded into fields, series and files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neptune.internal.operation import (
    AddStrings,
    AssignBool,
    AssignFloat,
    AssignInt,
    AssignString,
    LogFloats,
    LogImages,
    LogStrings,
    Operation,
    RemoveStrings,
    UploadFile,
    UploadFileSet,
)


@dataclass
class NeptuneRun:
    """What the operations leave behind: atoms, series points, file references, tags."""

    directory: Path
    fields: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[float | None, Any, float]]] = field(default_factory=dict)
    files: dict[str, UploadFile | UploadFileSet] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)


def offline_runs(data_directory: str | Path) -> list[Path]:
    """The offline run folders under a Neptune data directory."""
    return sorted(Path(data_directory, "offline").glob("run__*"))


def read_run(directory: str | Path) -> NeptuneRun:
    """Replay every operation of one offline run folder, in version order."""
    run = NeptuneRun(directory=Path(directory))
    lines: list[dict[str, Any]] = []
    for log in sorted(run.directory.glob("data-*.log")):
        lines.extend(json.loads(line) for line in log.read_text().splitlines() if line.strip())
    for line in sorted(lines, key=lambda entry: entry["version"]):
        operation = Operation.from_dict(line["obj"])
        run.operations.append(operation)
        path = "/".join(operation.path)
        if isinstance(operation, (AssignBool, AssignFloat, AssignInt, AssignString)):
            run.fields[path] = operation.value
        elif isinstance(operation, (LogFloats, LogImages, LogStrings)):
            run.series.setdefault(path, []).extend((v.step, v.value, v.ts) for v in operation.values)
        elif isinstance(operation, (UploadFile, UploadFileSet)):
            run.files[path] = operation
        elif isinstance(operation, AddStrings):
            run.tags.extend(operation.values)
        elif isinstance(operation, RemoveStrings):
            run.tags = [tag for tag in run.tags if tag not in operation.values]
    return run
