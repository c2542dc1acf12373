"""The write side of the local store: the dispatcher's sink and the run's source of truth.

It turns the record stream into a seed-compatible run folder (``metadata.json``,
``hyperparameters.json``, ``summary.json``, ``events.jsonl``, ``metrics/``) and promises:

- **Idempotent writes.** Each file knows the length of its last good write; a write that fails
  part-way is cut back to it and retried from exactly there, so a point is never stored twice and
  none after it is skipped. Summary counts are updated only for what reached disk.
- **A bounded backlog.** While the disk refuses writes (full, quota, read-only remount) records
  wait in memory, warned once, retried about every second and written when space returns. Past
  ``backlog_points`` unwritten points the oldest batches are dropped and counted as lost.
- **Nothing lost silently.** A record that cannot be encoded at all is counted as lost with its
  reason; ``close`` raises :class:`~runtel.errors.StoreWriteError` when anything logged is not
  in the store, the run is then stored ``failed`` and the store's report in ``summary.json`` says
  what and why.
- **Repair on open.** Re-opening a run (resume) cuts ``metrics/points.bin`` back to the last
  block its index covers and the index to its last whole entry, cuts a torn last line of
  ``events.jsonl`` and removes ``.tmp`` files a kill left behind. A folder written in the older
  one-file-per-series layout is converted first (:mod:`runtel.store._migrate`).

Points go to one shared file whatever the number of series (:mod:`runtel.store._blocks`): a block is
one append of its bytes, then one append of its index entries, and only then counted as written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import threading
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from runtel.config import DEFAULT_STORE_BACKLOG_POINTS
from runtel.errors import StoreCorruptError, StoreWriteError
from runtel.records import (
    SERIES_DTYPE,
    Heartbeat,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEnded,
    RunStarted,
    RunStatus,
)
from runtel.store import _layout
from runtel.store._appendfile import AppendFile, truncate_to_last_line
from runtel.store._blocks import (
    ENTRY_SIZE,
    POINTS_FILE,
    SEGMENT_DTYPE,
    SEGMENTS_FILE,
    read_segments,
    stats_by_series,
    tiling_break,
)
from runtel.store._events import is_event, to_line
from runtel.store._jsonio import read_json, write_json_atomic
from runtel.store._migrate import migrate_legacy, remove_legacy_files
from runtel.store._runmeta import apply_ended, apply_started, deep_merge
from runtel.store._series import LEGACY_LAYOUT, POINTS_LAYOUT, RECORD_SIZE, read_index
from runtel.store._stats import SeriesStats

logger = logging.getLogger("runtel")

#: ``summary.json`` is indented for people up to this many series.
_INDENTED_SUMMARY_UP_TO = 1000


@dataclasses.dataclass
class _Block:
    """One batch of points as per-series runs of records, written whole or not at all."""

    records: npt.NDArray[np.void]
    names: list[str]
    bounds: npt.NDArray[np.intp]  # series k's records are records[bounds[k]:bounds[k + 1]]
    mins: npt.NDArray[np.float64]
    maxs: npt.NDArray[np.float64]
    lasts: npt.NDArray[np.void]  # each series' last record

    @property
    def points(self) -> int:
        return int(self.bounds[-1])


@dataclasses.dataclass
class _Line:
    """One encoded line of ``events.jsonl``."""

    data: bytes


@dataclasses.dataclass
class _Failure:
    path: str
    errno: int | None
    message: str


class StoreWriter:
    """Writes one run folder (or one rank's folder); fed from one thread at a time."""

    name = "local"

    def __init__(
        self, run_dir: str | os.PathLike[str], *, backlog_points: int = DEFAULT_STORE_BACKLOG_POINTS
    ) -> None:
        self.run_dir = Path(run_dir)
        self._metrics = self.run_dir / _layout.METRICS_DIR
        self._backlog_limit = backlog_points
        self._pending: deque[_Block | _Line] = deque()
        self._pending_points = 0
        self._points_lost = 0
        self._records_lost = 0
        self._lost_reason: _Failure | None = None
        self._failure: _Failure | None = None  # set while the disk refuses writes
        self._failed_attempts = 0
        self._batches = 0
        self._dirty_docs: dict[str, bool] = {}  # document -> fsync wanted
        self._error: str | None = None
        self._lock = threading.Lock()  # the store's thread writes; finish() reads statistics
        try:
            _layout.create_run_dir(self.run_dir)
            _remove_temporary_files(self.run_dir)
            self._events = AppendFile(
                self.run_dir / _layout.EVENTS, _repair_events(self.run_dir / _layout.EVENTS)
            )
            self._events.append(b"")  # opens it: a folder we cannot write fails here, at init
            index = read_index(self._metrics)
            if index.version == LEGACY_LAYOUT:
                index = migrate_legacy(self._metrics, index)
            else:  # a conversion a kill interrupted after its commit
                remove_legacy_files(self._metrics)
            self._numbers: dict[str, int] = dict(index.series)
            points_size, segments_size = _repair_points(self._metrics)
            self._points = AppendFile(self._metrics / POINTS_FILE, points_size)
            self._segments = AppendFile(self._metrics / SEGMENTS_FILE, segments_size)
            self._metadata: dict[str, Any] = read_json(self.run_dir / _layout.METADATA, default={})
            self._params: dict[str, Any] = read_json(self.run_dir / _layout.HYPERPARAMETERS, default={})
            stored = stats_by_series(self._metrics, self._numbers)
            self._stats = SeriesStats({self._numbers[name]: row for name, row in stored.items()})
        except OSError as exc:
            raise _write_error(exc, self.run_dir, "cannot open the run folder for writing") from exc

    # ------------------------------------------------------------------ feeding
    def start(self, record: RunStarted) -> None:
        """Write the run's start now (before ``init()`` returns); a store that cannot is an error."""
        self.write([record])
        failure = self._failure or self._lost_reason
        if failure is not None:
            hint = "; pass a writable base_dir (or RUNTEL_BASE_DIR)" if failure.errno is not None else ""
            raise StoreWriteError(
                f"runtel cannot write the run folder {self.run_dir}: {failure.message}{hint}",
                path=failure.path,
                errno=failure.errno,
            )

    def write(self, batch: Sequence[Record]) -> None:
        """Take ``batch`` in and write as much of everything pending as the disk allows. Never raises."""
        with self._lock:
            for record in batch:
                try:
                    self._take(record)
                except Exception as exc:  # a record that can never be written: counted, never retried
                    self._lose_record(record, exc)
                # Record by record: a large batch on a disk that writes never meets the backlog limit,
                # which is there for points the disk refused.
                self._drain()
            self._batches += 1

    def retry(self) -> None:
        """Try the backlog again (the dispatcher calls this about every second while there is one)."""
        with self._lock:
            if not self.caught_up:
                self._drain()

    @property
    def backlog_points(self) -> int:
        """Points taken in but not yet on disk."""
        return self._pending_points

    @property
    def caught_up(self) -> bool:
        """Whether everything taken in is on disk."""
        return not (self._pending or self._dirty_docs)

    # ------------------------------------------------------------------ reading back what was written
    def metric_stats(self) -> dict[str, dict[str, Any]]:
        """Count, min, max and last value/step/time of every series as stored (a copy)."""
        with self._lock:  # the store's thread may be writing a backlog meanwhile
            return self._stats.as_dict(self._numbers)

    def next_step(self) -> int:
        """The step after the last one stored (0 for a new run): where a resumed run continues."""
        return self._stats.next_step()

    def run_ended(self, status: str, error: str | None, end_time: float) -> RunEnded:
        """The run's end record, its summary being the statistics of what is stored."""
        return RunEnded(
            status=cast(RunStatus, status),
            end_time=end_time,
            error=error,
            summary={"metrics": self.metric_stats()},
        )

    def report(self) -> dict[str, Any]:
        """What happened to the store during the run, in the shape of an exporter's report."""
        failure = self._lost_reason or self._failure
        lost = bool(self._points_lost or self._records_lost or self._pending)
        return {
            "name": self.name,
            "status": "failed" if lost else "ok",
            "error": failure.message if failure is not None and lost else None,
            "batches_exported": self._batches,
            "records_undelivered": self._records_lost
            + sum(isinstance(item, _Line) for item in self._pending),
            "points_undelivered": self._points_lost + self._pending_points,
            "retries": self._failed_attempts,
            "adaptations": {},
        }

    # ------------------------------------------------------------------ closing
    def close(self, exporter_reports: Mapping[str, Mapping[str, Any]]) -> None:
        """Write what is left, ``summary.json`` (once), sync everything and close the files.

        Raises :class:`StoreWriteError` when anything logged is not in the store; the run is then
        stored ``failed`` (a ``completed`` run did not complete its record) with that error's text
        in ``summary.json``'s ``error`` (after the run's own error, if it had one).
        """
        self._drain()
        report = self.report()
        failure = self._lost_reason or self._failure
        lost = None
        if report["status"] != "ok" and failure is not None:
            lost = StoreWriteError(
                f"the local store could not write everything of run {self._metadata.get('name')!r} "
                f"({self.run_dir}): {report['points_undelivered']} points and "
                f"{report['records_undelivered']} other records are not stored; "
                f"last error: {failure.message}",
                path=failure.path,
                errno=failure.errno,
            )
            self._mark_failed(str(lost))
        summary = {
            "status": self._metadata.get("status"),
            "duration": self._metadata.get("duration"),
            "error": self._error,
            "metrics": self._stats.as_dict(self._numbers),
            "exporters": {self.name: report, **exporter_reports},
        }
        try:
            # thousands of series: compact JSON, which json writes with its C encoder (10x faster)
            indent = 2 if len(self._numbers) <= _INDENTED_SUMMARY_UP_TO else None
            write_json_atomic(self.run_dir / _layout.SUMMARY, summary, indent=indent)
            write_json_atomic(self.run_dir / _layout.METADATA, self._metadata)
            self._dirty_docs.pop(_layout.METADATA, None)
            self._sync()
        except OSError as exc:
            self._note_failure(exc, self.run_dir / _layout.SUMMARY)
        for file in (self._points, self._segments, self._events):
            file.release()
        if lost is not None:
            raise lost

    def _mark_failed(self, store_error: str) -> None:
        """A run that lost data did not complete: ``failed``, the store's error after the run's own."""
        if self._metadata.get("status") == "completed":
            self._metadata["status"] = "failed"
        self._error = store_error if self._error is None else f"{self._error}\n{store_error}"

    # ------------------------------------------------------------------ internals
    def _take(self, record: Record) -> None:
        """Queue ``record``'s bytes and apply it to the in-memory documents (whole or not at all)."""
        if isinstance(record, MetricPoints):
            block = _to_block(record)
            if block is not None:
                self._make_room(block.points)
                self._pending.append(block)
                self._pending_points += block.points
            return
        if isinstance(record, Heartbeat):
            self._metadata["heartbeat"] = record.time
            self._dirty_docs.setdefault(_layout.METADATA, False)
            return
        if not is_event(record):
            return
        line = _Line((to_line(record) + "\n").encode("utf-8"))  # raises before anything changed
        if isinstance(record, RunStarted):
            deep_merge(self._params, record.config)
            self._dirty_docs[_layout.HYPERPARAMETERS] = True
            apply_started(self._metadata, record)
            self._dirty_docs[_layout.METADATA] = True
        elif isinstance(record, ParamsLogged):
            deep_merge(self._params, record.params)
            self._dirty_docs[_layout.HYPERPARAMETERS] = True
        elif isinstance(record, RunEnded):
            apply_ended(self._metadata, record)
            self._error = record.error
            self._dirty_docs[_layout.METADATA] = True
        self._pending.append(line)

    def _make_room(self, incoming: int) -> None:
        """Past the backlog limit, drop the oldest unwritten points (counted as lost, warned)."""
        while self._pending_points + incoming > self._backlog_limit:
            oldest = next((item for item in self._pending if isinstance(item, _Block)), None)
            if oldest is None:
                return
            self._pending.remove(oldest)
            self._pending_points -= oldest.points
            if not self._points_lost:
                logger.error(
                    "runtel: the local store's backlog passed %d unwritten points "
                    "(RUNTEL_STORE_BACKLOG_POINTS); the oldest are dropped and counted as lost",
                    self._backlog_limit,
                )
            self._points_lost += oldest.points
            self._lost_reason = self._failure or _Failure(
                str(self.run_dir), None, f"backlog limit of {self._backlog_limit} points passed"
            )

    def _drain(self) -> None:
        pending = self._pending
        while pending:
            item = pending[0]
            try:
                if isinstance(item, _Block):
                    self._write_block(item)
                else:
                    self._events.append(item.data)
            except OSError as exc:
                self._note_failure(exc, Path(exc.filename) if exc.filename else self._events.path)
                return
            pending.popleft()
        for document, fsync in list(self._dirty_docs.items()):
            content = self._metadata if document == _layout.METADATA else self._params
            try:
                write_json_atomic(self.run_dir / document, content, fsync=fsync)
            except OSError as exc:
                self._note_failure(exc, self.run_dir / document)
                return
            del self._dirty_docs[document]
        if self._failure is not None:
            logger.warning("runtel: the local store can write again; the backlog is written")
            self._failure = None

    def _write_block(self, block: _Block) -> None:
        """The block's bytes, then its index entries; a failure of either leaves neither behind."""
        new = [name for name in block.names if name not in self._numbers]
        if new:
            numbers = dict(self._numbers)
            first = max(numbers.values(), default=0) + 1
            for number, name in enumerate(new, first):
                numbers[name] = number
            document = {"version": POINTS_LAYOUT, "series": numbers}
            write_json_atomic(self._metrics / _layout.SERIES_INDEX, document, indent=None)
            self._numbers = numbers
        data = memoryview(block.records.view(np.uint8).data)
        offsets = block.bounds * RECORD_SIZE
        start = self._points.committed
        series = np.array([self._numbers[name] for name in block.names], np.int64)
        entries = np.zeros(len(block.names), SEGMENT_DTYPE)
        entries["series"] = series
        entries["size"] = np.diff(offsets)
        entries["start"] = offsets[:-1] + start
        entries["crc"] = [zlib.crc32(data[a:b]) for a, b in itertools.pairwise(offsets.tolist())]
        self._points.append(data)
        try:
            self._segments.append(entries.tobytes())
        except OSError:
            self._points.rollback(start)
            raise
        lasts = block.lasts
        self._stats.add(
            series,
            np.diff(block.bounds),
            block.mins,
            block.maxs,
            lasts["value"],
            lasts["step"],
            lasts["time"],
        )
        self._pending_points -= block.points

    def _sync(self) -> None:
        for file in (self._points, self._segments, self._events):
            file.sync()

    def _note_failure(self, exc: OSError, path: Path) -> None:
        where = str(path)
        reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
        failure = _Failure(where, exc.errno, f"{reason}: {where}")
        self._failed_attempts += 1
        if self._failure is None:
            logger.warning(
                "runtel: the local store cannot write (%s); training goes on, up to %d points wait in "
                "memory (RUNTEL_STORE_BACKLOG_POINTS) and are written when it can",
                failure.message,
                self._backlog_limit,
            )
        self._failure = failure

    def lose_media(self, what: str, exc: Exception) -> None:
        """A media file that could not be encoded or written (its record is not sent): counted as lost."""
        with self._lock:
            self._records_lost += 1
            errno = exc.errno if isinstance(exc, OSError) else None
            where = getattr(exc, "filename", None) or str(self.run_dir / "media")
            message = f"{what} could not be stored ({type(exc).__name__}: {exc})"
            logger.error("runtel: %s; it is not in the run", message)
            self._lost_reason = _Failure(str(where), errno, message)

    def _lose_record(self, record: Record, exc: Exception) -> None:
        self._records_lost += 1
        message = f"a {type(record).__name__} record could not be encoded ({type(exc).__name__}: {exc})"
        logger.error("runtel: %s; it is not stored", message)
        self._lost_reason = _Failure(str(self.run_dir / _layout.EVENTS), None, message)


def _to_block(points: MetricPoints) -> _Block | None:
    """The batch sorted by series (each series' points in logging order), with per-series min/max.

    The records are filled in logging order, then reordered whole rows at a time. When every call
    of the batch logged the same names (the usual loop: the index repeats one layout) the reorder
    is a transpose, 5x cheaper than the general stable sort by series.
    """
    n = len(points)
    if not n:
        return None
    if points.grouped is not None:
        grouped, ids = points.grouped
        return _block_of(points.names, grouped, ids, np.arange(ids.size, dtype=np.intp) * (n // ids.size))
    records = np.empty(n, dtype=SERIES_DTYPE)
    records["step"] = points.steps
    records["time"] = points.times
    records["value"] = points.values
    records["span_id"] = points.span_ids
    layout = _repeated_layout(points.index)
    if layout is not None:
        width = layout.size
        by_id = np.argsort(layout, kind="stable")
        records = np.ascontiguousarray(records.reshape(n // width, width).T[by_id]).reshape(n)
        ids = layout[by_id]
        starts = np.arange(width, dtype=np.intp) * (n // width)
    else:
        order = np.argsort(points.index, kind="stable")
        records = records[order]
        index = points.index[order]
        starts = np.concatenate([np.zeros(1, np.intp), np.flatnonzero(np.diff(index)) + 1])
        ids = index[starts]
    return _block_of(points.names, records, ids, starts)


def _block_of(
    names: tuple[str, ...],
    records: npt.NDArray[np.void],
    ids: npt.NDArray[np.int32],
    starts: npt.NDArray[np.intp],
) -> _Block:
    """Records grouped by series (series ``ids[k]`` from ``starts[k]``) as a block with its statistics."""
    values = records["value"]
    n = records.size
    return _Block(
        records=records,
        names=[names[i] for i in ids.tolist()],
        bounds=np.append(starts, n),
        mins=np.fmin.reduceat(values, starts),
        maxs=np.fmax.reduceat(values, starts),
        lasts=records[np.append(starts[1:], n) - 1],
    )


def _repeated_layout(index: npt.NDArray[np.int32]) -> npt.NDArray[np.int32] | None:
    """The series ids of one call when ``index`` repeats them call after call, each id once; else None."""
    repeats = np.flatnonzero(index == index[0])
    width = int(repeats[1]) if repeats.size > 1 else index.size
    if index.size % width or repeats.size != index.size // width:
        return None
    layout = index[:width]
    if not np.array_equal(index.reshape(-1, width), np.broadcast_to(layout, (index.size // width, width))):
        return None
    return layout if np.unique(layout).size == width else None


def _repair_points(metrics_dir: Path) -> tuple[int, int]:
    """Cut ``points.bin`` to the blocks its index covers and the index to its whole entries; their sizes.

    Entries past the end of ``points.bin`` at the index's end (their bytes never reached the disk)
    are dropped; an entry out of place before other good ones is damage: the run is not resumed.
    """
    points, segments = metrics_dir / POINTS_FILE, metrics_dir / SEGMENTS_FILE
    try:
        data_size = points.stat().st_size
    except FileNotFoundError:
        data_size = 0
    entries = read_segments(metrics_dir)
    kept = entries.size
    broken = tiling_break(entries, data_size)
    if broken is not None:
        kept, problem = broken
        rest = entries[kept:]
        if (rest["start"].astype(np.int64) + rest["size"] <= data_size).any():
            raise StoreCorruptError(segments, f"entry {kept}", f"{problem}; `runtel verify` names the damage")
    covered = int(entries["start"][kept - 1]) + int(entries["size"][kept - 1]) if kept else 0
    with contextlib.suppress(FileNotFoundError):
        if segments.stat().st_size != kept * ENTRY_SIZE:
            os.truncate(segments, kept * ENTRY_SIZE)
    if data_size != covered:
        os.truncate(points, covered)
    return covered, kept * ENTRY_SIZE


def _repair_events(path: Path) -> int:
    """The length of ``events.jsonl`` after cutting a torn last line (0 when there is none yet)."""
    try:
        return truncate_to_last_line(path)
    except FileNotFoundError:
        return 0


def _remove_temporary_files(run_dir: Path) -> None:
    """Hidden ``.<name>.<random>.tmp`` files and folders of atomic writes a kill interrupted.

    Other ranks' folders (``ranks/``) belong to their own, possibly live, writers and are left alone.
    """
    for folder, subfolders, files in os.walk(run_dir):
        if Path(folder) == run_dir and "ranks" in subfolders:
            subfolders.remove("ranks")
        for name in [*files, *subfolders]:
            if name.startswith(".") and name.endswith(".tmp"):
                target = Path(folder, name)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                    subfolders.remove(name)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()


def _write_error(exc: OSError, where: Path, what: str) -> StoreWriteError:
    path = exc.filename or str(where)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return StoreWriteError(
        f"runtel {what} {where}: {reason} ({path}, errno {exc.errno}); "
        "pass a writable base_dir (or RUNTEL_BASE_DIR)",
        path=str(path),
        errno=exc.errno,
    )


__all__ = ["StoreWriter"]
