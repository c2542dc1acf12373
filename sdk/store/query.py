"""Reading runs back: no server, works on finished runs and on runs still being written."""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import psutil

from runtel.errors import MetricNotFoundError, StoreCorruptError
from runtel.records import Record, SpanEnded
from runtel.store import _layout
from runtel.store._events import read_events
from runtel.store._metrics import series_records
from runtel.store._series import read_index
from runtel.store._untrusted import (
    ARRAY,
    INTEGER,
    NUMBER,
    OBJECT,
    TEXT,
    Kind,
    Where,
    check_fields,
    finite_number,
    inside,
    load_object,
)

if TYPE_CHECKING:
    import pandas as pd

    from runtel.records import RunEdited
    from runtel.store.aggregate import Aggregate, Grid
    from runtel.store.artifacts import ArtifactVersion
    from runtel.store.edits import Tags
    from runtel.store.media import MediaItem
    from runtel.store.where import RunFilter
from runtel.sweep import SweepInfo, sweep_info

#: A run whose heartbeat is older than this, on another host, is shown as crashed.
STALE_HEARTBEAT_SECONDS = 300.0

Mode = Literal["min", "max", "auto"]
_LOWER_IS_BETTER = ("loss", "error", "err", "perplexity", "mse", "mae", "rmse", "wer", "cer")


class StoredRun:
    """One run folder, read lazily; every call re-reads disk, so a live run shows new data.

    Attributes read when the run is opened (``metadata.json`` is validated then):

    - ``dir``: the run folder (``<base_dir>/<name>_<id8>``), a :class:`~pathlib.Path`.
    - ``id``: the run id, 32 hex digits, which is also the run's OpenTelemetry trace id.
    - ``name`` and ``project``: as given to ``runtel.init`` (``name`` falls back to the folder name).
    - ``metadata``: the whole ``metadata.json`` as a dict (status, timestamps, host, pid, git commit...),
      with the edits of :mod:`runtel.store.edits` applied (effective ``tags``, ``note``, ``name``).

    Every file read is untrusted input: a field of the wrong type, a path leading out of the folder
    or a missing file raises :class:`~runtel.errors.StoreCorruptError` naming the file and the field.
    """

    def __init__(self, run_dir: Path, metadata: dict[str, Any] | None = None) -> None:
        """Open ``run_dir``; ``metadata`` is its already validated ``metadata.json`` (from a listing)."""
        self.dir = run_dir if isinstance(run_dir, Path) else Path(run_dir)
        if metadata is None:
            metadata = read_metadata(self.dir)
        self._use(metadata)
        self.id: str = metadata.get("id") or ""
        self.project: str = metadata.get("project") or ""

    def _use(self, metadata: dict[str, Any]) -> None:
        from runtel.store.edits import with_edits

        self.metadata: dict[str, Any] = with_edits(self.dir, metadata)
        self.name: str = self.metadata.get("name") or self.dir.name

    # ------------------------------------------------------------------ editing (runtel.store.edits)
    @property
    def tags(self) -> Tags:
        """The current tags as a set: ``run.tags.add("baseline")``, ``run.tags.remove("draft")``."""
        from runtel.store.edits import Tags

        return Tags(self._current_tags, self._edit)

    def _current_tags(self) -> tuple[str, ...]:
        self._use(read_metadata(self.dir))  # another process may have edited meanwhile
        return tuple(self.metadata.get("tags") or ())

    @property
    def note(self) -> str | None:
        """The free-text note set with :meth:`set_note` (None until one is set)."""
        self._use(read_metadata(self.dir))
        return self.metadata.get("note")

    def set_note(self, note: str) -> None:
        """Replace the run's note (``""`` clears it); safe while the run is being written."""
        self.edit(note=note)

    def rename(self, name: str) -> None:
        """Change the display name; the folder (and so lookup by id) stays as it is."""
        self.edit(name=name)

    def edit(
        self,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        note: str | None = None,
        name: str | None = None,
    ) -> None:
        """Several changes as one edit (one ``RunEdited`` record): tags added and removed, note, name."""
        from runtel.store.edits import make_edit

        self._edit(make_edit(add=add, remove=remove, note=note, name=name))

    def delete(self, *, permanent: bool = False) -> Path | None:
        """Move the run to ``<base_dir>/.trash/`` (its new folder), or remove it with ``permanent``."""
        from runtel.store.trash import delete_run

        return delete_run(self.dir.parent, self, permanent=permanent)

    def _edit(self, edit: RunEdited) -> None:
        from runtel.store.edits import append_edit, what_changes

        self._use(read_metadata(self.dir))
        changes = what_changes(edit, self.metadata)
        if changes is not None:
            append_edit(self.dir, changes)
            self._use(read_metadata(self.dir))

    @property
    def sweep(self) -> SweepInfo | None:
        """The sweep this run is, or is a trial of (None outside sweeps or when the block is malformed)."""
        return sweep_info(self.metadata)

    def __repr__(self) -> str:
        return f"StoredRun(name={self.name!r}, id={self.id!r}, status={self.metadata.get('status')!r})"

    @property
    def status(self) -> str:
        """``running`` only while the writing process lives; a dead (or zombie) writer shows ``crashed``."""
        return live_status(read_metadata(self.dir))

    def params(self) -> dict[str, Any]:
        """The hyperparameters, nested as logged (``{}`` before any were logged)."""
        return load_object(run_file(self.dir, _layout.HYPERPARAMETERS))

    def summary(self) -> dict[str, Any]:
        """``summary.json`` of a finished run (``{}`` while it runs): status, duration, error, per-metric
        ``count/min/max/last``, exporter reports and replays, each checked for its type."""
        return read_summary(self.dir)

    def ranks(self) -> dict[int, str]:
        """Status of each rank of a distributed run (``{0: status}`` for a single process)."""
        statuses = {0: self.status}
        for folder in sorted((self.dir / "ranks").glob("*")):
            if folder.name.isdigit():
                statuses[int(folder.name)] = StoredRun(folder).status
        return statuses

    def metrics(self, rank: int = 0) -> list[str]:
        """Names of the run's metric series, in the order they first appeared."""
        directory = self._rank_dir(rank)
        return list(read_index(metrics_dir(directory)).series)

    def history(
        self, metric: str, rank: int = 0
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(steps, times, values)`` of every point of ``metric``, in logging order (of ``rank``).

        Exactly the stored values (NaN and infinities included), as read-only arrays; a long series is
        memory-mapped on its file, nothing copied until used (``numpy.array(values)``: a writable copy).
        """
        records = self._records(metric, rank)
        return records["step"], records["time"], records["value"]

    def span_ids(self, metric: str, rank: int = 0) -> npt.NDArray[np.uint64]:
        """The OTel span id each point was logged under (the run span's id outside any phase)."""
        return self._records(metric, rank)["span_id"]

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

    def frame(
        self,
        metrics: Sequence[str] | None = None,
        *,
        rank: int = 0,
        long: bool = False,
        backend: Literal["pandas", "polars"] = "pandas",
    ) -> Any:
        """The history as a DataFrame: ``step``, ``time``, one column per metric (see
        :mod:`runtel.store.frames` for how a metric logged twice at one step is kept, and ``long=True``
        for one row per point)."""
        from runtel.store.frames import history_frame

        return history_frame(self, metrics, rank=rank, long=long, backend=backend)

    def events(self, rank: int = 0) -> Iterator[Record]:
        """Every non-metric record, in logging order, as the typed records of :mod:`runtel.records`.

        ``RunStarted``, ``ParamsLogged``, ``SpanEnded``, ``ArtifactLogged``, ``FigureLogged``,
        ``HistogramLogged``, ``MediaLogged`` (its paths relative to the run folder; :meth:`media` resolves
        them) and ``RunEnded`` (frozen dataclasses: ``dataclasses.asdict`` gives a dict).
        A torn last line (a crash mid-write) is skipped; :func:`runtel.store.scan.problems` names it.
        """
        yield from read_events(run_file(self._rank_dir(rank), _layout.EVENTS)).records

    def artifacts(self) -> dict[str, list[ArtifactVersion]]:
        """Every artifact name of the run with its versions, oldest first (paths inside this folder)."""
        from runtel.store.artifacts import ArtifactStore

        store = ArtifactStore(self.dir)
        return {name: store.versions(name) for name in store.names()}

    def artifact(self, name: str, version: int = -1, *, verify: bool = True) -> ArtifactVersion:
        """Version ``version`` of artifact ``name`` (1 = first, -1 = latest); ``.path`` is the file to load.

        With ``verify`` the stored bytes are hashed first: a changed, truncated or missing file raises
        :class:`~runtel.errors.ChecksumMismatchError`, so a damaged checkpoint is never loaded unknowingly.
        """
        from runtel.store.artifacts import ArtifactStore

        return ArtifactStore(self.dir).get(name, version, verify=verify)

    def media(self, name: str) -> list[tuple[int, MediaItem]]:
        """``[(step, item)]`` of the images, tables, texts or audio clips logged under ``name``
        (a gallery gives one item per image); see :class:`runtel.store.media.MediaItem`."""
        from runtel.store.media import media_of

        return media_of(self, name)

    def media_names(self) -> dict[str, int]:
        """Each media key of the run with its number of items, in the order they first appeared."""
        from runtel.store.media import media_names

        return media_names(self)

    def table(self, name: str, step: int | None = None) -> pd.DataFrame:
        """The latest table logged under ``name`` (or the one at ``step``) as a pandas DataFrame."""
        from runtel.store.media import table_of

        return table_of(self, name, step)

    def spans(self) -> list[SpanEnded]:
        """Every ended span of every rank (one trace), in start order."""
        found = [
            record for rank in self.ranks() for record in self.events(rank) if isinstance(record, SpanEnded)
        ]
        return sorted(found, key=lambda span: span.start_time)

    def _rank_dir(self, rank: int) -> Path:
        return self.dir if rank == 0 else self.dir / "ranks" / str(rank)

    def _records(self, metric: str, rank: int = 0) -> npt.NDArray[np.void]:
        folder = metrics_dir(self._rank_dir(rank))
        index = read_index(folder)
        if metric not in index.series:
            known = ", ".join(sorted(index.series)) or "none"
            raise MetricNotFoundError(f"run {self.name} has no metric {metric!r}; it has: {known}")
        return series_records(folder, index, metric)


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
        where: str | RunFilter | None = None,
        sort: str | None = None,
        desc: bool = False,
    ) -> list[StoredRun]:
        """Runs with a valid ``metadata.json``, oldest first (or by ``sort``, a field of the filter grammar).

        Folders that are not runs, or whose metadata is damaged, are left out: :func:`runtel.store.scan.scan`
        lists them with the reason. Only ``metadata.json`` is read (cached per folder by modification time).
        ``sweep`` (a sweep's name or id) keeps that sweep's run and its trials (see :mod:`runtel.sweep`).
        ``where`` is an expression of :mod:`runtel.store.where` (``"params.lr < 1e-3 and 'baseline' in
        tags"``), which also reads summaries and params; ``sort`` puts runs without the field last.
        """
        from runtel.store.scan import scan
        from runtel.store.where import RunFilter, compile_where, sort_runs

        chosen = where if isinstance(where, RunFilter) or where is None else compile_where(where)
        found = scan(self.base_dir).runs
        if project is not None:
            found = [run for run in found if run.project == project]
        if name is not None:
            found = [run for run in found if run.name == name]
        if sweep is not None:
            found = [run for run in found if sweep in _sweep_keys(run)]
        if status is not None:
            found = [run for run in found if run.status == status]
        if chosen is not None:
            found = chosen.select(found)
        if sort is not None:
            found = sort_runs(found, sort, descending=desc)
        elif desc:
            found.reverse()
        return found

    def frame(
        self,
        where: str | RunFilter | None = None,
        *,
        metrics: Sequence[str] | None = None,
        backend: Literal["pandas", "polars"] = "pandas",
    ) -> Any:
        """One row per run (``where`` as in :meth:`runs`): id, name, project, status, tags, start_time,
        duration, ``params.*`` and ``metrics.<name>.<stat>``, typed as :mod:`runtel.store.frames` says."""
        from runtel.store.frames import runs_frame

        return runs_frame(self.runs(where=where), metrics=metrics, backend=backend)

    def run(self, key: str) -> StoredRun:
        """A run by full id, id prefix (8+ characters), folder name or run name (the latest of that name).

        Ids and names are found from folder names (``<name>_<id8>``) and, for names, the folders
        holding edits (a renamed run keeps its folder); only a key none of those matches falls back
        to reading every run. A damaged folder that matches raises
        :class:`~runtel.errors.StoreCorruptError`.
        """
        from runtel.store.scan import lookup

        return lookup(self.base_dir, key)

    def aggregate(
        self,
        metric: str,
        by: Sequence[str] = (),
        *,
        where: str | RunFilter | None = None,
        grid: Grid = "union",
        mode: Mode = "auto",
        ddof: int = 1,
    ) -> Aggregate:
        """``metric`` over the runs ``where`` selects, grouped by ``by``: per group mean, std, min, max and
        n on a common step grid, and of each run's best and last value (see :mod:`runtel.store.aggregate`)."""
        from runtel.store.aggregate import aggregate

        return aggregate(self.runs(where=where), metric, by, grid=grid, mode=mode, ddof=ddof)

    def delete(self, run: str | StoredRun, *, permanent: bool = False) -> Path | None:
        """Move a run to ``<base_dir>/.trash/`` (returns its new folder; move it back to restore), or
        remove it for good with ``permanent``. A run still being written is refused."""
        return (run if isinstance(run, StoredRun) else self.run(run)).delete(permanent=permanent)

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


#: The fields of ``metadata.json`` readers use, and what each must hold when present.
_METADATA_FIELDS: dict[str, Kind] = {
    "id": TEXT,
    "name": TEXT,
    "project": TEXT,
    "status": TEXT,
    "host": TEXT,
    "start_time": NUMBER,
    "end_time": NUMBER,
    "heartbeat": NUMBER,
    "duration": NUMBER,
    "process_start_time": NUMBER,
    "pid": INTEGER,
    "tags": ARRAY,
    "note": TEXT,
}
_SERIES_STATS_FIELDS: dict[str, Kind] = {
    "count": INTEGER,
    "last_step": INTEGER,
    "min": NUMBER,
    "max": NUMBER,
    "last": NUMBER,
    "last_time": NUMBER,
}
_SUMMARY_FIELDS: dict[str, Kind] = {
    "status": TEXT,
    "duration": NUMBER,
    "error": TEXT,
    "metrics": OBJECT,
    "exporters": OBJECT,
    "replays": ARRAY,
}


def read_metadata(run_dir: Path) -> dict[str, Any]:
    """``metadata.json`` of ``run_dir`` with every field readers use checked; ``StoreCorruptError`` else."""
    path = run_file(run_dir, _layout.METADATA)
    if not path.is_file():
        raise StoreCorruptError(path, None, "is missing (not a run folder)")
    return check_metadata(load_object(path), path)


def check_metadata(document: dict[str, Any], path: Where) -> dict[str, Any]:
    """``document`` if every known field has its type and the run id is there."""
    check_fields(document, _METADATA_FIELDS, path, required=("id",))
    if not document["id"]:
        raise StoreCorruptError(path, "id", "is empty")
    if not all(isinstance(tag, str) for tag in document.get("tags") or []):
        raise StoreCorruptError(path, "tags", "holds a value that is not a string")
    return document


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` (``{}`` until the run ends) with its fields and per-metric entries typed."""
    path = run_file(run_dir, _layout.SUMMARY)
    return check_summary(load_object(path), path)


def check_summary(summary: dict[str, Any], path: Where) -> dict[str, Any]:
    """``summary`` if its fields and per-metric entries have their types."""
    check_fields(summary, _SUMMARY_FIELDS, path)
    for name, stats in (summary.get("metrics") or {}).items():
        if not isinstance(stats, dict):
            raise StoreCorruptError(path, f"metrics: {name}", "is not a JSON object")
        check_fields(stats, _SERIES_STATS_FIELDS, path, prefix=f"metrics: {name}: ")
    return summary


def run_file(run_dir: Path, relative: str) -> Path:
    """``run_dir / relative``, refused when a symbolic link on the way leads out of the run folder."""
    path = run_dir / relative
    if path.is_symlink() or (path.parent != run_dir and path.parent.is_symlink()):
        return inside(run_dir, relative, path, "path")
    return path


def metrics_dir(run_dir: Path) -> Path:
    """``run_dir/metrics``, refused when it, or its index, is a symbolic link leading out of the folder."""
    return run_file(run_dir, f"{_layout.METRICS_DIR}/{_layout.SERIES_INDEX}").parent


def live_status(metadata: dict[str, Any]) -> str:
    """The status to show: a ``running`` run whose writer is gone (dead, or a zombie) is ``crashed``."""
    status = metadata.get("status")
    if not isinstance(status, str):
        return "unknown"
    if status == "running" and not _writer_alive(metadata):
        return "crashed"
    return status


@functools.lru_cache(maxsize=4096)
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
            if started is not None and abs(process.create_time() - float(started)) >= 1.0:
                return False  # the pid was reused by another process
            return bool(process.status() != psutil.STATUS_ZOMBIE)  # killed, not yet reaped
        except psutil.Error:
            return False
    heartbeat = finite_number(metadata.get("heartbeat"))
    return time.time() - heartbeat < STALE_HEARTBEAT_SECONDS
