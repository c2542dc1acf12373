"""The typed, immutable records every exporter reads.

A run is recorded as an ordered stream of these records. The local store writes them
as they come, and replaying a stored run re-creates the very same stream, so live
export and ``runtel export`` go through one code path in each exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

RunStatus = Literal["running", "completed", "failed", "crashed", "killed"]
SpanKind = Literal["run", "epoch", "phase"]
MediaKind = Literal["image", "table", "text", "audio"]

#: One metric point as the store keeps it: little-endian, fixed width, ``numpy.fromfile``-readable.
SERIES_DTYPE = np.dtype([("step", "<i8"), ("time", "<f8"), ("value", "<f8"), ("span_id", "<u8")])


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    name: str
    project: str
    start_time: float
    config: dict[str, Any]
    tags: tuple[str, ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)
    #: True when this continues an earlier run of the same id (after preemption or a crash).
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class ParamsLogged:
    """Hyperparameters, nested as the user gave them (flatten with ``flatten_params``)."""

    params: dict[str, Any]
    time: float


@dataclass(frozen=True, slots=True, eq=False)
class MetricPoints:
    """A batch of points in logging order, as columns.

    ``series[i]`` is the metric name of point ``i``'s index ``index[i]``; ``steps``,
    ``times`` (Unix seconds), ``values`` and ``span_ids`` are parallel arrays.
    """

    names: tuple[str, ...]
    index: npt.NDArray[np.int32]
    steps: npt.NDArray[np.int64]
    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    span_ids: npt.NDArray[np.uint64]
    #: The same points as ``SERIES_DTYPE`` records grouped by series (ascending index, the same
    #: number of points each, each series' in logging order) and the series' indices, when their
    #: producer has them (the C hot path): the store then writes them without sorting.
    grouped: tuple[npt.NDArray[np.void], npt.NDArray[np.int32]] | None = None
    _groups: dict[str, npt.NDArray[np.intp]] | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def by_name(self) -> dict[str, npt.NDArray[np.intp]]:
        """Positions of each metric's points, each in logging order (computed once per batch)."""
        if self._groups is None:
            order = np.argsort(self.index, kind="stable")
            bounds = np.flatnonzero(np.diff(self.index[order])) + 1
            groups = {self.names[int(self.index[g[0]])]: g for g in np.split(order, bounds) if g.size}
            object.__setattr__(self, "_groups", groups)  # frozen: set once, as a cache
        assert self._groups is not None
        return self._groups


@dataclass(frozen=True, slots=True)
class SpanEnded:
    """An epoch, phase or the run itself, once it has ended (OTel ids as hex)."""

    name: str
    kind: SpanKind
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_time: float
    end_time: float
    attributes: dict[str, Any]
    status: Literal["ok", "error", "unset"] = "unset"


@dataclass(frozen=True, slots=True)
class ArtifactLogged:
    name: str
    version: int
    sha256: str
    size: int
    path: str
    time: float
    step: int | None
    kind: str = "artifact"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FigureLogged:
    name: str
    path: str
    step: int | None
    time: float


@dataclass(frozen=True, slots=True)
class MediaLogged:
    """One image, table, text or audio clip logged under ``name`` at ``step``, already on disk.

    The file is content-addressed under the run folder (``media/<sha256>.<ext>``): identical
    content is stored once. ``path`` is absolute in a live or replayed record; ``events.jsonl``
    keeps it relative to the run folder. A list logged under one name at one step is a gallery:
    one record per item, ``index`` 0 to ``count - 1``.

    ``meta`` by kind: image ``shape``, ``dtype``, ``format`` ("png" or "npy"); table ``columns``
    (``[{"name", "dtype"}]``) and ``rows``; text ``chars``; audio ``sample_rate``, ``channels``,
    ``frames``. ``preview`` is an 8-bit PNG beside an exact ``.npy`` image that is not uint8.
    """

    name: str
    step: int
    time: float
    kind: MediaKind
    path: str
    sha256: str
    size: int
    span_id: str | None = None
    caption: str | None = None
    index: int = 0
    count: int = 1
    preview: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class HistogramLogged:
    name: str
    step: int
    time: float
    bin_edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    min: float
    max: float
    mean: float
    std: float
    count: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN stays NaN), for backends that store histograms as files."""
        return {
            "name": self.name,
            "step": self.step,
            "time": self.time,
            "bin_edges": self.bin_edges.tolist(),
            "counts": self.counts.tolist(),
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "count": self.count,
        }


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent about every few seconds so a reader can tell a live run from a dead one."""

    time: float


@dataclass(frozen=True, slots=True)
class RunEnded:
    status: RunStatus
    end_time: float
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunEdited:
    """Tags, note or display name changed after the fact, by whom and when.

    A change, not a state: ``tags_added``/``tags_removed`` apply to the tags before it (the run's
    ``RunStarted`` tags, then each earlier edit, see :func:`edited_tags`), so two editors never
    undo each other. ``note``/``name`` of None leave them as they were; ``note=""`` clears the note.
    """

    time: float
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()
    note: str | None = None
    name: str | None = None
    host: str = ""
    pid: int = 0
    user: str | None = None


Record: TypeAlias = (
    RunStarted
    | ParamsLogged
    | MetricPoints
    | SpanEnded
    | ArtifactLogged
    | FigureLogged
    | HistogramLogged
    | MediaLogged
    | Heartbeat
    | RunEnded
    | RunEdited
)


def edited_tags(tags: tuple[str, ...], edit: RunEdited) -> tuple[str, ...]:
    """``tags`` after ``edit``: removed ones dropped, added ones appended once, order kept."""
    removed = set(edit.tags_removed)
    kept = [tag for tag in tags if tag not in removed]
    return tuple(dict.fromkeys([*kept, *(tag for tag in edit.tags_added if tag not in removed)]))


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one flat dict with ``/``-joined keys: ``{"model": {"depth": 4}}`` → ``model/depth``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{full}/"))
        else:
            flat[full] = value
    return flat
