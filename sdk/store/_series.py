"""The series index (``metrics/index.json``), and the first layout: one file per metric series.

``index.json`` maps metric names to where their points are: version 1 (folders written before the
shared points file, read by this module) names each series' own file ``sN.bin``; version 2 gives
each series a number, its points being segments of ``metrics/points.bin`` (see
:mod:`runtel.store._blocks`, the layout every run is written in now). :mod:`runtel.store._metrics`
reads either.

Version 1: append-only binary metric series, fixed-width records (``SERIES_DTYPE``). A crash
can leave at most one partial record at the end of a file; readers ignore it and a writer
re-opening the file truncates it (a resume converts the folder to version 2). Metric names map
to file names through ``metrics/index.json`` (written atomically before any data of a new series),
so any Unicode name, names with ``/`` and names differing only in case work on every file system.

Integrity: ``metrics/blocks.crc`` holds one entry per written block of every series (``CRC_DTYPE``:
the series' number, where the block starts in its ``.bin``, its size, its CRC-32), so garbled bytes
are found with their position (:func:`verify_series`) while each ``.bin`` stays
``numpy.fromfile``-readable. One sidecar per folder rather than one per series: creating a file
costs about 50 µs here, so 10,000 series would spend half a second creating sidecars alone.
Folders written before the sidecar existed still read; their series are reported unverified, as are
bytes of a finished run no entry covers. A torn or out-of-range sidecar entry is damage of the sidecar.
"""

from __future__ import annotations

import mmap
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from runtel.errors import StoreCorruptError
from runtel.records import SERIES_DTYPE
from runtel.store._layout import SERIES_INDEX
from runtel.store._untrusted import kind_of, load_object

RECORD_SIZE = SERIES_DTYPE.itemsize
#: One sidecar entry: which series (the N of ``sN.bin``), the block's length and first byte, its CRC-32.
CRC_DTYPE = np.dtype(
    [("series", "<u4"), ("size", "<u4"), ("start", "<u8"), ("crc", "<u4"), ("unused", "<u4")]
)
CRC_FILE = "blocks.crc"
_SERIES_FILE = re.compile(r"s(\d{1,9})\.bin")

#: What an index may name: a file directly inside ``metrics/`` (no separators, no ``..``, not hidden).
_PLAIN_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
#: Series files at least this long are memory-mapped by readers; shorter ones are read (one copy).
MMAP_MIN_BYTES = 4 << 20

IntegrityStatus = Literal["ok", "unverified", "damaged"]


#: ``index.json`` versions: one file per series (read only), and series in the shared points file.
LEGACY_LAYOUT, POINTS_LAYOUT = 1, 2
#: Series numbers of the points layout fit the index entries' ``uint32``; 0 is never used.
_MAX_SERIES_NUMBER = 2**32 - 1


@dataclass(frozen=True, slots=True)
class SeriesIndex:
    """``index.json`` checked: its layout version and, in the order series first appeared, each
    metric name's file name (version 1) or series number (version 2)."""

    version: int
    series: dict[str, Any]


#: ``index.json`` paths to ``((inode, size, mtime ns), index)`` of their last read: a run of 10,000
#: series has a 300 kB index, which reading every series' history would otherwise parse each time.
_index_cache: dict[str, tuple[tuple[int, int, int], SeriesIndex]] = {}


def read_index(metrics_dir: Path) -> SeriesIndex:
    """``index.json`` (an empty version-2 index before it exists); ``StoreCorruptError`` unless every
    entry is what its version says: a string naming a plain file, or a distinct series number.

    Not re-read while the file is unchanged (it is replaced, never edited in place); the answer is
    shared, so callers copy ``series`` before changing it.
    """
    path = metrics_dir / SERIES_INDEX
    try:
        info = os.stat(path)
    except OSError:
        return _parse_index(path)
    stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _index_cache.get(str(path))
    if cached is None or cached[0] != stamp:
        cached = _index_cache[str(path)] = (stamp, _parse_index(path))
    return cached[1]


def _parse_index(path: Path) -> SeriesIndex:
    document = load_object(path)
    version = document.get("version", POINTS_LAYOUT if not document else LEGACY_LAYOUT)
    series = document.get("series", {})
    if not isinstance(series, dict):
        raise StoreCorruptError(path, "series", "is not a JSON object of metric name to file name")
    if version == POINTS_LAYOUT and not isinstance(version, bool):
        for name, number in series.items():
            if (
                isinstance(number, bool)
                or not isinstance(number, int)
                or not 0 < number <= _MAX_SERIES_NUMBER
            ):
                raise StoreCorruptError(
                    path, f"series: {name}", f"is {number!r}, not a series number (1 to {_MAX_SERIES_NUMBER})"
                )
        if len(set(series.values())) != len(series):
            raise StoreCorruptError(path, "series", "gives two metrics the same series number")
        return SeriesIndex(POINTS_LAYOUT, dict(series))
    if version != LEGACY_LAYOUT or isinstance(version, bool):
        raise StoreCorruptError(path, "version", f"is {version!r}; this runtel reads versions 1 and 2")
    for name, file_name in series.items():
        if not isinstance(file_name, str):
            raise StoreCorruptError(path, f"series: {name}", f"is {kind_of(file_name)}, not a file name")
        if not _PLAIN_FILE.fullmatch(file_name):
            raise StoreCorruptError(
                path, f"series: {name}", f"is {file_name!r}, not a plain file name inside metrics/"
            )
    return SeriesIndex(LEGACY_LAYOUT, dict(series))


def read_series(path: Path) -> npt.NDArray[np.void]:
    """Every whole record of a series file (a torn tail is ignored), as a read-only array.

    A long series is memory-mapped: no copy and no per-point work, the records are the file's pages,
    so a cold read of ten million points costs what the page cache costs. A short one (under
    ``MMAP_MIN_BYTES``) is read into memory: a mapping holds a file descriptor while its array
    lives, and a run may have thousands of short series.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return np.empty(0, dtype=SERIES_DTYPE)
    except OSError as exc:  # ELOOP: a symbolic link, which could lead anywhere on the disk
        raise StoreCorruptError(path, None, f"cannot be read as a series ({exc.strerror})") from exc
    with os.fdopen(descriptor, "rb") as handle:
        count = os.fstat(handle.fileno()).st_size // RECORD_SIZE
        if count == 0:
            return np.empty(0, dtype=SERIES_DTYPE)
        if count * RECORD_SIZE >= MMAP_MIN_BYTES:
            try:
                mapped = mmap.mmap(handle.fileno(), count * RECORD_SIZE, access=mmap.ACCESS_READ)
            except OSError:  # a file system without mmap (some network and FUSE mounts): read it
                pass
            else:
                return np.frombuffer(mapped, dtype=SERIES_DTYPE, count=count)
        records = np.fromfile(handle, dtype=SERIES_DTYPE, count=count)
    records.flags.writeable = False
    return records


def series_number(file_name: str) -> int | None:
    """The N of ``sN.bin`` (the key of its sidecar entries), None for any other name."""
    match = _SERIES_FILE.fullmatch(file_name)
    return int(match.group(1)) if match else None


def read_crc_entries(metrics_dir: Path) -> npt.NDArray[np.void] | None:
    """Every whole entry of the folder's CRC sidecar, or None for a folder written before it existed."""
    path = metrics_dir / CRC_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    return np.fromfile(path, dtype=CRC_DTYPE, count=size // CRC_DTYPE.itemsize)


#: The key of :func:`verify_folder`'s answer for damage of the sidecar itself (no metric name is empty).
SIDECAR_KEY = ""
_ENTRY_SIZE = CRC_DTYPE.itemsize


@dataclass(frozen=True, slots=True)
class SeriesIntegrity:
    """What :func:`verify_series` found in one series file (or :func:`verify_folder` in the sidecar).

    ``status``: ``ok`` (every byte is in a block that matches its CRC), ``unverified`` (bytes no CRC
    covers in a finished run, or no sidecar at all: a folder written before sidecars existed) or
    ``damaged``. ``damage_at`` is the first damaged byte range of ``path`` (the ``.bin``, or
    ``blocks.crc`` when its entries are torn or garbled) as (start, end) and ``problem`` says what is
    wrong there. ``unverified_bytes`` counts whole records after the last checked block (a live
    writer's newest block, or a crash between the two writes): readable, not covered by a CRC.
    """

    path: Path
    status: IntegrityStatus
    records: int
    verified_bytes: int
    unverified_bytes: int = 0
    damage_at: tuple[int, int] | None = None
    problem: str | None = None


def verify_series(
    path: Path, entries: npt.NDArray[np.void] | None, *, finished: bool = True
) -> SeriesIntegrity:
    """Check every block of the series file ``path`` against its CRC in ``entries``.

    ``entries`` is the folder's sidecar as :func:`read_crc_entries` returns it (None: a folder
    written before sidecars, so the series is unverified); read it once to check many series.
    An entry out of range (not where the previous block ended, not a whole number of records, past
    the end of the file) is damage of the sidecar at that entry's bytes. Bytes after the last
    entry are ``unverified`` in a ``finished`` run; in a live one they are the newest block, whose
    entry follows. One ``zlib.crc32`` per written block over a memory map (no per-point Python
    work), so a 10-million-point series is checked at memory speed. A torn last record is not
    damage: the writer truncates it on resume and readers ignore it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return SeriesIntegrity(path, "damaged", 0, 0, damage_at=(0, 0), problem="the series file is missing")
    whole = size - size % RECORD_SIZE
    records = whole // RECORD_SIZE
    number = series_number(path.name)
    if entries is None or number is None:
        return SeriesIntegrity(path, "unverified", records, 0, unverified_bytes=whole)
    positions = np.flatnonzero(entries["series"] == number)
    mine = entries[positions]
    starts = mine["start"].astype(np.int64)
    ends = starts + mine["size"].astype(np.int64)
    expected = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
    bad = np.flatnonzero(
        (starts != expected) | (mine["size"] == 0) | (mine["size"] % RECORD_SIZE != 0) | (mine["unused"] != 0)
    )
    if bad.size:
        first = int(bad[0])
        return _sidecar_damaged(
            path,
            records,
            int(positions[first]),
            f"its entry for {path.name} says bytes {int(starts[first])}-{int(ends[first])}; "
            f"the previous block ended at {int(expected[first])}",
        )
    past = np.flatnonzero(ends > whole)
    if past.size:
        first = int(past[0])
        return _sidecar_damaged(
            path,
            records,
            int(positions[first]),
            f"its entry for {path.name} says bytes {int(starts[first])}-{int(ends[first])}; "
            f"the file ends at byte {size}",
        )
    covered = int(ends[-1]) if ends.size else 0
    if covered:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                checks = zip(starts.tolist(), ends.tolist(), mine["crc"].tolist(), strict=True)
                for block, (start, end, crc) in enumerate(checks):
                    if zlib.crc32(view[start:end]) != crc:
                        return _damaged(path, records, start, end, f"block {block} does not match its CRC")
            finally:
                view.release()
    status: IntegrityStatus = "unverified" if finished and covered < whole else "ok"
    return SeriesIntegrity(path, status, records, covered, unverified_bytes=whole - covered)


def verify_legacy_folder(
    metrics_dir: Path, index: SeriesIndex, *, finished: bool = True
) -> dict[str, SeriesIntegrity]:
    """:func:`verify_series` of every series in a version-1 ``metrics/`` folder, by metric name.

    A sidecar cut mid-entry is damage at its torn tail, under :data:`SIDECAR_KEY`; the whole entries
    before it still verify their blocks (a live writer may be appending one: only a ``finished``
    run's torn sidecar is damage).
    """
    entries = read_crc_entries(metrics_dir)
    found = {}
    if entries is not None and finished:
        sidecar = metrics_dir / CRC_FILE
        size = sidecar.stat().st_size
        if size % _ENTRY_SIZE:
            torn = size - size % _ENTRY_SIZE
            found[SIDECAR_KEY] = _damaged(
                sidecar,
                0,
                torn,
                size,
                f"the sidecar ends mid-entry: {size} bytes, not a whole number of {_ENTRY_SIZE}-byte entries",
            )
    for name, file_name in index.series.items():
        if isinstance(file_name, str) and series_number(file_name) is not None:
            found[name] = verify_series(metrics_dir / file_name, entries, finished=finished)
        else:  # never follow a crafted entry out of the folder
            problem = f"the index names {file_name!r}, not a series file (sN.bin)"
            found[name] = SeriesIntegrity(
                metrics_dir / SERIES_INDEX, "damaged", 0, 0, damage_at=(0, 0), problem=problem
            )
    return found


def _damaged(path: Path, records: int, start: int, end: int, problem: str) -> SeriesIntegrity:
    return SeriesIntegrity(path, "damaged", records, start, damage_at=(start, end), problem=problem)


def _sidecar_damaged(series: Path, records: int, entry: int, problem: str) -> SeriesIntegrity:
    """Entry number ``entry`` of the series' sidecar is out of range: damage at that entry's bytes."""
    start = entry * _ENTRY_SIZE
    return SeriesIntegrity(
        series.parent / CRC_FILE,
        "damaged",
        records,
        0,
        damage_at=(start, start + _ENTRY_SIZE),
        problem=f"entry {entry} of {CRC_FILE} is garbled: {problem}",
    )


def legacy_stats(metrics_dir: Path, index: SeriesIndex) -> dict[str, dict[str, Any]]:
    """Per-metric summary rebuilt from a version-1 folder's series files."""
    stats: dict[str, dict[str, Any]] = {}
    for name, file_name in index.series.items():
        records = read_series(metrics_dir / file_name)
        if records.size:
            values = records["value"]
            stats[name] = {
                "count": int(values.size),
                "min": float(np.fmin.reduce(values)),
                "max": float(np.fmax.reduce(values)),
                "last": float(values[-1]),
                "last_step": int(records["step"][-1]),
                "last_time": float(records["time"][-1]),
            }
    return stats
