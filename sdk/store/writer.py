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
- **Repair on open.** Re-opening a run (resume) truncates torn series records and a torn last
  line of ``events.jsonl``, brings the CRC sidecar up to date and removes ``.tmp`` files a kill
  left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
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
from runtel.errors import StoreWriteError
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
from runtel.store._appendfile import AppendFile, truncate_to, truncate_to_last_line
from runtel.store._events import is_event, to_line
from runtel.store._jsonio import read_json, write_json_atomic
from runtel.store._runmeta import apply_ended, apply_started, deep_merge
from runtel.store._series import (
    CRC_DTYPE,
    CRC_FILE,
    RECORD_SIZE,
    read_crc_entries,
    read_index,
    series_number,
    series_stats,
)

logger = logging.getLogger("runtel")

#: Above this many files written since the last sync, ``close`` fsyncs them from a pool of threads:
#: one fsync costs 2.5-5 ms here (25-50 s for 10,000 series one after the other), while concurrent
#: ones share journal commits (2,000 files in 0.28 s with 32 threads). ``os.sync`` would also wait
#: for every other process's dirty data.
_FSYNC_EACH_UP_TO = 16
_FSYNC_THREADS = 32
#: ``summary.json`` is indented for people up to this many series.
_INDENTED_SUMMARY_UP_TO = 1000


@dataclasses.dataclass
class _Block:
    """One batch of points as per-series runs of records, written series by series (``done`` so far)."""

    records: npt.NDArray[np.void]
    names: list[str]
    bounds: list[int]  # series k's records are records[bounds[k]:bounds[k + 1]]
    mins: list[float]
    maxs: list[float]
    last_values: list[float]
    last_steps: list[int]
    last_times: list[float]
    done: int = 0

    @property
    def unwritten(self) -> int:
        return self.bounds[-1] - self.bounds[self.done]


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
        self._series: dict[str, AppendFile] = {}
        self._numbers: dict[str, int] = {}
        self._crc_waiting: list[tuple[int, int, int, int]] = []
        self._sizes: dict[str, int] = {}  # series files found on open, by file name: their repaired size
        self._open_files = 0
        self._max_open = _descriptor_budget()
        self._error: str | None = None
        self._lock = threading.Lock()  # the store's thread writes; finish() reads statistics
        try:
            _layout.create_run_dir(self.run_dir)
            _remove_temporary_files(self.run_dir)
            self._events = AppendFile(
                self.run_dir / _layout.EVENTS, _repair_events(self.run_dir / _layout.EVENTS)
            )
            self._events.append(b"")  # opens it: a folder we cannot write fails here, at init
            self._index = read_index(self._metrics)
            self._crc = AppendFile(self._metrics / CRC_FILE, self._repair_series())
            self._metadata: dict[str, Any] = read_json(self.run_dir / _layout.METADATA, default={})
            self._params: dict[str, Any] = read_json(self.run_dir / _layout.HYPERPARAMETERS, default={})
            self._stats = series_stats(self._metrics)
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
        return not (self._pending or self._dirty_docs or self._crc_waiting)

    # ------------------------------------------------------------------ reading back what was written
    def metric_stats(self) -> dict[str, dict[str, Any]]:
        """Count, min, max and last value/step/time of every series as stored (a copy)."""
        with self._lock:  # the store's thread may be writing a backlog meanwhile
            return {name: dict(stats) for name, stats in self._stats.items()}

    def next_step(self) -> int:
        """The step after the last one stored (0 for a new run): where a resumed run continues."""
        return max((int(stats["last_step"]) + 1 for stats in self._stats.values()), default=0)

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
            "metrics": self._stats,
            "exporters": {self.name: report, **exporter_reports},
        }
        try:
            # thousands of series: compact JSON, which json writes with its C encoder (10x faster)
            indent = 2 if len(self._stats) <= _INDENTED_SUMMARY_UP_TO else None
            write_json_atomic(self.run_dir / _layout.SUMMARY, summary, indent=indent)
            write_json_atomic(self.run_dir / _layout.METADATA, self._metadata)
            self._dirty_docs.pop(_layout.METADATA, None)
            self._sync()
        except OSError as exc:
            self._note_failure(exc, self.run_dir / _layout.SUMMARY)
        for file in (*self._series.values(), self._crc, self._events):
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
                self._make_room(block.unwritten)
                self._pending.append(block)
                self._pending_points += block.unwritten
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
            self._pending_points -= oldest.unwritten
            if not self._points_lost:
                logger.error(
                    "runtel: the local store's backlog passed %d unwritten points "
                    "(RUNTEL_STORE_BACKLOG_POINTS); the oldest are dropped and counted as lost",
                    self._backlog_limit,
                )
            self._points_lost += oldest.unwritten
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
        try:
            self._write_crc()
        except OSError as exc:
            self._note_failure(exc, self._crc.path)
            return
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
        new = [name for name in block.names[block.done :] if name not in self._index]
        if new:
            index = dict(self._index)
            for name in new:
                index[name] = f"s{len(index) + 1:06d}.bin"
            document = {"version": 1, "series": index}
            write_json_atomic(self._metrics / _layout.SERIES_INDEX, document, indent=None)
            self._index = index
        data = memoryview(block.records.view(np.uint8).data)
        bounds = block.bounds
        for k in range(block.done, len(block.names)):
            name = block.names[k]
            file = self._series_file(name)
            start, end = bounds[k] * RECORD_SIZE, bounds[k + 1] * RECORD_SIZE
            chunk = data[start:end]
            offset = file.committed
            was_open = file.is_open
            try:
                file.append(chunk, keep_open=was_open or self._open_files < self._max_open)
            finally:
                self._open_files += file.is_open - was_open
            self._crc_waiting.append((self._numbers[name], end - start, offset, zlib.crc32(chunk)))
            self._count(name, block, k)
            block.done = k + 1
            self._pending_points -= bounds[k + 1] - bounds[k]

    def _count(self, name: str, block: _Block, k: int) -> None:
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = {"count": 0, "min": block.mins[k], "max": block.maxs[k]}
        else:
            stats["min"] = _fmin(stats["min"], block.mins[k])
            stats["max"] = _fmax(stats["max"], block.maxs[k])
        stats["count"] += block.bounds[k + 1] - block.bounds[k]
        stats["last"] = block.last_values[k]
        stats["last_step"] = block.last_steps[k]
        stats["last_time"] = block.last_times[k]

    def _write_crc(self) -> None:
        if self._crc_waiting:
            entries = np.array([(s, n, o, c, 0) for s, n, o, c in self._crc_waiting], dtype=CRC_DTYPE)
            self._crc.append(entries.tobytes())
            self._crc_waiting.clear()

    def _series_file(self, name: str) -> AppendFile:
        file = self._series.get(name)
        if file is None:
            file_name = self._index[name]
            number = series_number(file_name)
            if number is None:
                raise OSError(f"metrics/index.json maps {name!r} to {file_name!r}, not a series file")
            path = self._metrics / file_name
            file = self._series[name] = AppendFile(path, self._sizes.pop(file_name, 0))
            self._numbers[name] = number
        return file

    def _repair_series(self) -> int:
        """Whole records only, and a CRC entry for every stored byte (an older folder's are trusted);
        the sidecar's committed length."""
        sidecar = self._metrics / CRC_FILE
        entries = read_crc_entries(self._metrics)
        if entries is None and not self._index:
            return 0
        kept: list[Any] = []
        changed = entries is None or sidecar.stat().st_size % CRC_DTYPE.itemsize != 0
        known = entries if entries is not None else np.empty(0, CRC_DTYPE)
        for file_name in self._index.values():
            number = series_number(file_name) if isinstance(file_name, str) else None
            path = self._metrics / file_name if number is not None else None
            if path is None or not path.is_file():
                continue
            size = self._sizes[file_name] = truncate_to(path, RECORD_SIZE)
            mine = known[known["series"] == number]
            ends = mine["start"].astype(np.int64) + mine["size"]
            keep = mine[ends <= size]
            covered = int(ends[ends <= size].max(initial=0))
            kept.append(keep)
            if keep.size != mine.size:
                changed = True
            if covered < size:
                with path.open("rb") as handle:
                    handle.seek(covered)
                    crc = zlib.crc32(handle.read(size - covered))
                kept.append(np.array([(number, size - covered, covered, crc, 0)], dtype=CRC_DTYPE))
                changed = True
        if not changed:
            return sidecar.stat().st_size
        merged = np.concatenate([np.empty(0, CRC_DTYPE), *kept])
        tmp = sidecar.with_name(f".{CRC_FILE}.tmp")
        merged.tofile(tmp)
        os.replace(tmp, sidecar)
        return int(merged.nbytes)

    def _sync(self) -> None:
        files = [file for file in (*self._series.values(), self._crc, self._events) if file.unsynced]
        if len(files) <= _FSYNC_EACH_UP_TO:
            for file in files:
                file.sync()
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="runtel-fsync") as pool:
            for _ in pool.map(AppendFile.sync, files):  # re-raises the first error
                pass

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
    """The batch sorted by series (each series' points in logging order), with per-series min/max."""
    n = len(points)
    if not n:
        return None
    order = np.argsort(points.index, kind="stable")
    index = points.index[order]
    starts = np.concatenate([np.zeros(1, np.intp), np.flatnonzero(np.diff(index)) + 1])
    records = np.empty(n, dtype=SERIES_DTYPE)
    records["step"] = points.steps[order]
    records["time"] = points.times[order]
    records["value"] = points.values[order]
    records["span_id"] = points.span_ids[order]
    values = records["value"]
    lasts = records[np.append(starts[1:], n) - 1]
    return _Block(
        records=records,
        names=[points.names[i] for i in index[starts].tolist()],
        bounds=[*starts.tolist(), n],
        mins=np.fmin.reduceat(values, starts).tolist(),
        maxs=np.fmax.reduceat(values, starts).tolist(),
        last_values=lasts["value"].tolist(),
        last_steps=lasts["step"].tolist(),
        last_times=lasts["time"].tolist(),
    )


def _fmin(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _fmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


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


def _descriptor_budget() -> int:
    """How many series files may stay open: half the process's descriptor limit, within [64, 16384]."""
    try:
        import resource
    except ImportError:
        return 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 16_384
    return max(64, min(soft // 2, 16_384))


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
