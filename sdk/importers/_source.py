"""What an importer reads from one source run, before it becomes records in the store.

Each source module fills a :class:`SourceRun`; :mod:`runtel.importers._sink` turns it into the
records a live run produces. What the source lost or the store cannot hold is counted in the run's
:class:`ImportReport`, in the same ``{kind: {"count", "examples"}}`` form the exporters' reports use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtel.records import HistogramLogged, RunStatus

_MAX_EXAMPLES = 5


class ImportReport:
    """Counts each adaptation kind with a few examples; ``as_dict`` is what ``summary.json`` keeps."""

    def __init__(self) -> None:
        self._kinds: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, count: int = 1, example: Any = None) -> None:
        if count <= 0:
            return
        item = self._kinds.setdefault(kind, {"count": 0, "examples": []})
        item["count"] += count
        if example is not None and len(item["examples"]) < _MAX_EXAMPLES:
            item["examples"].append(example)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {
            kind: {"count": v["count"], "examples": list(v["examples"])} for kind, v in self._kinds.items()
        }


@dataclass
class Series:
    """One metric's points in source order; ``times`` in Unix seconds."""

    steps: npt.NDArray[np.int64]
    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]


@dataclass
class SourceFile:
    """A file (or folder) to copy into the run's artifact store under ``name``."""

    path: Path
    name: str
    time: float
    step: int | None = None
    kind: str = "artifact"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceImage:
    """An encoded image (PNG, JPEG...) that becomes a figure in ``plots/``."""

    name: str
    step: int
    time: float
    data: bytes
    suffix: str = "png"


@dataclass
class SourceRun:
    """Everything one source run holds that the store can represent, plus the report of the rest.

    ``source_id`` identifies the run at its source (it decides idempotence); ``fingerprint`` changes
    when the source run changed since (more points, a new status), which triggers a fresh import. Both
    are copied from the :class:`Pending` the run was loaded from.
    """

    source: str
    source_id: str
    source_path: str
    name: str
    project: str
    start_time: float
    end_time: float
    status: RunStatus = "completed"
    error: str | None = None
    fingerprint: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    notes: str | None = None
    host: str | None = None
    source_metadata: dict[str, Any] = field(default_factory=dict)
    source_summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Series] = field(default_factory=dict)
    histograms: list[HistogramLogged] = field(default_factory=list)
    images: list[SourceImage] = field(default_factory=list)
    files: list[SourceFile] = field(default_factory=list)
    report: ImportReport = field(default_factory=ImportReport)
    #: Temporary folders the reader downloaded into; removed once the run is written.
    scratch: list[Path] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return run_id_of(self.source, self.source_id)

    def points(self) -> int:
        return sum(int(series.values.size) for series in self.metrics.values())


@dataclass(frozen=True)
class Pending:
    """A source run found but not read yet: enough to tell whether it was imported before."""

    source: str
    source_id: str
    source_path: str
    fingerprint: str
    load: Callable[[], SourceRun]

    @property
    def run_id(self) -> str:
        return run_id_of(self.source, self.source_id)


@dataclass(frozen=True)
class Skipped:
    """A folder or run that could not be imported, and why (shown to the user; the rest goes on)."""

    source_path: str
    reason: str


def run_id_of(source: str, source_id: str) -> str:
    """A 32-hex run id (a trace id) derived from the source and its id: the same source, the same run."""
    return hashlib.sha256(f"{source}\0{source_id}".encode()).hexdigest()[:32]


def fingerprint_of(paths: list[Path]) -> str:
    """Names and sizes of the source files: changes when the source run grows, not when it is copied."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.name}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]
