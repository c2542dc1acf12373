"""Every metric series of a run in one append-only points file (``metrics/index.json`` version 2).

``metrics/points.bin`` holds the points of all series as fixed-width records (``SERIES_DTYPE``:
step ``<i8``, time ``<f8``, value ``<f8``, span_id ``<u8``; ``numpy.fromfile(path, SERIES_DTYPE)``
reads them). Each written block (one flush) is one append, its points grouped by series, each
series' points in logging order. ``metrics/points.idx`` says whose records are where: one entry per
series per block (``SEGMENT_DTYPE``: the series' number from ``index.json``, the segment's size in
bytes, its first byte in ``points.bin``, its CRC-32), appended after the block's bytes. So the
entries tile ``points.bin`` from byte 0 in order, and an entry exists only once its bytes do: a
live reader never sees an entry without its data. Bytes after the last entry are a block whose
entries were never written (a kill between the two appends): part of no series, cut on resume.

Why one file: a file per series cost a file creation (50 µs to 1 ms) and an fsync each; 10,000
series took 16 s to finish. A run here has two data files whatever its number of series.

Reading one series selects its entries (one vectorised comparison over the index, parsed once per
process while the file is unchanged) and takes their bytes: adjacent segments merge, so a series
that is one range (a run logging one metric) is a memory map of ``points.bin`` with no copy;
otherwise its few large segments are gathered into one array at memory speed.
"""

from __future__ import annotations

import mmap
import os
import stat
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtel.errors import StoreCorruptError
from runtel.records import SERIES_DTYPE
from runtel.store._series import CRC_DTYPE, MMAP_MIN_BYTES, RECORD_SIZE, SIDECAR_KEY, SeriesIntegrity

POINTS_FILE = "points.bin"
SEGMENTS_FILE = "points.idx"
#: One segment: which series, its size in bytes, its first byte in ``points.bin``, its CRC-32 (and
#: four bytes kept zero). The same 24-byte entry as the older layout's ``blocks.crc``.
SEGMENT_DTYPE = CRC_DTYPE
ENTRY_SIZE = SEGMENT_DTYPE.itemsize
_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)

#: ``points.idx`` paths to ``((inode, size, mtime ns), entries)`` of their last read.
_cache: dict[str, tuple[tuple[int, int, int], npt.NDArray[np.void]]] = {}


def read_segments(metrics_dir: Path) -> npt.NDArray[np.void]:
    """Every whole entry of ``points.idx`` (a torn last entry is left out), read-only, cached."""
    path = metrics_dir / SEGMENTS_FILE
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return np.empty(0, SEGMENT_DTYPE)
    if not stat.S_ISREG(info.st_mode):
        raise StoreCorruptError(path, None, "is not a plain file (a link could lead anywhere on the disk)")
    stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    entries = np.fromfile(path, dtype=SEGMENT_DTYPE, count=info.st_size // ENTRY_SIZE)
    entries.flags.writeable = False
    _cache[str(path)] = (stamp, entries)
    return entries


def tiling_break(entries: npt.NDArray[np.void], data_size: int) -> tuple[int, str] | None:
    """The first entry that does not continue where the previous one ended, within ``data_size``
    bytes of whole records, with what is wrong with it; None when all of them do."""
    sizes = entries["size"].astype(np.int64)
    starts = entries["start"].astype(np.int64)
    ends = np.cumsum(sizes)
    expected = ends - sizes
    bad = (starts != expected) | (sizes == 0) | (sizes % RECORD_SIZE != 0) | (entries["unused"] != 0)
    bad |= ends > data_size
    found = np.flatnonzero(bad)
    if not found.size:
        return None
    first = int(found[0])
    start, end = int(starts[first]), int(starts[first] + sizes[first])
    if start != int(expected[first]):
        problem = f"says bytes {start}-{end}; the previous segment ended at byte {int(expected[first])}"
    elif end > data_size:
        problem = f"says bytes {start}-{end}; {POINTS_FILE} holds {data_size} bytes"
    else:
        problem = f"says bytes {start}-{end}, not a whole number of {RECORD_SIZE}-byte records"
    return first, problem


def series_records(metrics_dir: Path, number: int) -> npt.NDArray[np.void]:
    """Every point of series ``number`` in logging order, read-only (memory-mapped when long)."""
    entries = read_segments(metrics_dir)
    mine = entries[entries["series"] == number]
    if not mine.size:
        return np.empty(0, SERIES_DTYPE)
    path = metrics_dir / POINTS_FILE
    descriptor = _open_points(path, mine)
    with os.fdopen(descriptor, "rb", buffering=0) as handle:
        data_size = os.fstat(handle.fileno()).st_size
        ranges = _ranges(mine, data_size, path)
        total = sum(end - start for start, end in ranges)
        if total >= MMAP_MIN_BYTES:
            try:
                mapped = mmap.mmap(handle.fileno(), ranges[-1][1], access=mmap.ACCESS_READ)
            except OSError:  # a file system without mmap (some network and FUSE mounts): read it
                pass
            else:
                return _from_map(mapped, ranges, total)
        records = np.empty(total // RECORD_SIZE, SERIES_DTYPE)
        target = memoryview(records.view(np.uint8).data)
        at = 0
        for start, end in ranges:
            handle.seek(start)
            want = end - start
            while want:
                got = handle.readinto(target[at : at + want])
                if not got:
                    raise StoreCorruptError(path, None, f"ended at byte {start} while being read")
                at, want, start = at + got, want - got, start + got
    records.flags.writeable = False
    return records


def stats_by_series(metrics_dir: Path, numbers: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Count, min, max and last value/step/time of every named series, from ``points.bin`` in one
    pass: per-segment reductions (segments tile the file), then per series over its segments."""
    entries = read_segments(metrics_dir)
    path = metrics_dir / POINTS_FILE
    try:
        data_size = os.lstat(path).st_size
    except FileNotFoundError:
        data_size = 0
    broken = tiling_break(entries, data_size)
    if broken is not None:
        entries = entries[: broken[0]]
    if not entries.size:
        return {}
    counts = entries["size"].astype(np.int64) // RECORD_SIZE
    firsts = np.cumsum(counts) - counts
    order = np.argsort(entries["series"], kind="stable")
    series = entries["series"][order]
    groups = np.concatenate([np.zeros(1, np.intp), np.flatnonzero(np.diff(series)) + 1])
    group_ends = np.append(groups[1:], series.size) - 1
    mins, maxs, lasts = _segment_reductions(path, firsts, (firsts + counts - 1)[order][group_ends])
    found = dict(
        zip(
            series[groups].tolist(),
            zip(
                np.add.reduceat(counts[order], groups).tolist(),
                np.fmin.reduceat(mins[order], groups).tolist(),
                np.fmax.reduceat(maxs[order], groups).tolist(),
                lasts["value"].tolist(),
                lasts["step"].tolist(),
                lasts["time"].tolist(),
                strict=True,
            ),
            strict=True,
        )
    )
    stats = {}
    for name, number in numbers.items():
        if number in found:
            count, low, high, last, last_step, last_time = found[number]
            stats[name] = {
                "count": count,
                "min": low,
                "max": high,
                "last": last,
                "last_step": last_step,
                "last_time": last_time,
            }
    return stats


def _segment_reductions(
    path: Path, firsts: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.void]]:
    """Min and max of the values of the segments starting at record ``firsts`` (which tile the file
    up to the last one's end), and copies of the records at ``wanted``; over a memory map, so a long
    run is streamed through the page cache rather than read into memory."""
    end = int(wanted.max(initial=0)) + 1
    with (
        path.open("rb") as handle,
        mmap.mmap(handle.fileno(), end * RECORD_SIZE, access=mmap.ACCESS_READ) as mapped,
    ):
        records = np.frombuffer(mapped, SERIES_DTYPE, count=end)
        values = records["value"]
        found = np.fmin.reduceat(values, firsts), np.fmax.reduceat(values, firsts), records[wanted]
        del records, values  # the map closes only once no array points into it
    return found


def count_records(metrics_dir: Path) -> tuple[int, int]:
    """``(points the index says are stored, 1 if points.bin has bytes after them else 0)``."""
    covered = int(read_segments(metrics_dir)["size"].sum())
    try:
        size = os.lstat(metrics_dir / POINTS_FILE).st_size
    except FileNotFoundError:
        size = 0
    return covered // RECORD_SIZE, int(size > covered)


def verify_points(
    metrics_dir: Path, numbers: Mapping[str, int], *, finished: bool = True
) -> dict[str, SeriesIntegrity]:
    """Every segment of every series checked against its CRC, by metric name.

    Damage of the index itself (a torn last entry of a finished run, an entry that does not continue
    where the previous one ended, names no series or reaches past ``points.bin``) is reported under
    :data:`SIDECAR_KEY` at that entry's bytes of ``points.idx``, and every series with entries from
    there on is damaged with it. Bytes of ``points.bin`` after the last entry of a finished run
    (a kill between the two appends) are ``unverified`` under that key: they belong to no series.
    """
    index_path, data_path = metrics_dir / SEGMENTS_FILE, metrics_dir / POINTS_FILE
    entries = read_segments(metrics_dir)
    data_size, index_size = _plain_size(data_path), _plain_size(index_path)
    if isinstance(data_size, str) or (data_size is None and entries.size):
        what = data_size or f"is missing, though {entries.size} segments of it were written"
        lost = SeriesIntegrity(data_path, "damaged", 0, 0, damage_at=(0, 0), problem=what)
        return dict.fromkeys(numbers, lost) | {SIDECAR_KEY: lost}
    data_size = data_size or 0
    if index_size is None and data_size:
        gone = f"is missing: the {data_size} bytes of {POINTS_FILE} belong to no series"
        lost = SeriesIntegrity(index_path, "damaged", 0, 0, damage_at=(0, 0), problem=gone)
        return dict.fromkeys(numbers, lost) | {SIDECAR_KEY: lost}
    index_size = index_size if isinstance(index_size, int) else 0
    found: dict[str, SeriesIntegrity] = {}
    known = np.fromiter(numbers.values(), np.int64, len(numbers))
    unknown = np.flatnonzero(~np.isin(entries["series"].astype(np.int64), known))
    usable = entries.size
    broken = tiling_break(entries, data_size)
    problem: str | None = None
    if broken is not None:
        usable, problem = broken[0], f"entry {broken[0]} of {SEGMENTS_FILE} {broken[1]}"
    if unknown.size and unknown[0] < usable:
        usable = int(unknown[0])
        number = int(entries["series"][usable])
        problem = f"entry {usable} of {SEGMENTS_FILE} names series {number}, which index.json does not list"
    if problem is not None:
        start = usable * ENTRY_SIZE
        found[SIDECAR_KEY] = SeriesIntegrity(
            index_path, "damaged", 0, 0, damage_at=(start, start + ENTRY_SIZE), problem=problem
        )
    elif finished and index_size % ENTRY_SIZE:
        torn = index_size - index_size % ENTRY_SIZE
        found[SIDECAR_KEY] = SeriesIntegrity(
            index_path,
            "damaged",
            0,
            torn,
            damage_at=(torn, index_size),
            problem=f"the index ends mid-entry: {index_size} bytes, not whole {ENTRY_SIZE}-byte entries",
        )
    good = entries[:usable]
    covered = int(good["start"][-1]) + int(good["size"][-1]) if usable else 0
    if finished and SIDECAR_KEY not in found and covered < data_size:
        found[SIDECAR_KEY] = SeriesIntegrity(
            data_path, "unverified", 0, covered, unverified_bytes=data_size - covered
        )
    damage = _crc_damage(data_path, good)
    after = set(entries["series"][usable:].tolist())
    for name, number in numbers.items():
        mine = good["series"] == number
        records = int(good["size"][mine].sum()) // RECORD_SIZE
        if number in damage:
            block, start, end = damage[number]
            found[name] = SeriesIntegrity(
                data_path,
                "damaged",
                records,
                start,
                damage_at=(start, end),
                problem=f"segment {block} of the series does not match its CRC",
            )
        elif number in after and problem is not None:
            found[name] = SeriesIntegrity(
                index_path,
                "damaged",
                records,
                records * RECORD_SIZE,
                damage_at=found[SIDECAR_KEY].damage_at,
                problem=problem,
            )
        else:
            found[name] = SeriesIntegrity(data_path, "ok", records, records * RECORD_SIZE)
    return found


def _plain_size(path: Path) -> int | str | None:
    """The size of ``path``, None when it does not exist, or why it is not read (not a plain file)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return "is not a plain file (a link could lead anywhere on the disk; not read)"
    return info.st_size


def _crc_damage(path: Path, entries: npt.NDArray[np.void]) -> dict[int, tuple[int, int, int]]:
    """Series number to (its segment number, first byte, end) of its first segment failing its CRC."""
    damage: dict[int, tuple[int, int, int]] = {}
    if not entries.size:
        return damage
    seen: dict[int, int] = {}
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            rows = zip(
                entries["series"].tolist(),
                entries["start"].tolist(),
                entries["size"].tolist(),
                entries["crc"].tolist(),
                strict=True,
            )
            for number, start, size, crc in rows:
                block = seen[number] = seen.get(number, -1) + 1
                if number not in damage and zlib.crc32(view[start : start + size]) != crc:
                    damage[number] = (block, start, start + size)
        finally:
            view.release()
    return damage


def _open_points(path: Path, entries: npt.NDArray[np.void]) -> int:
    try:
        return os.open(path, _FLAGS)
    except FileNotFoundError:
        raise StoreCorruptError(
            path, None, f"is missing: {len(entries)} segments of the series were written and are gone"
        ) from None
    except OSError as exc:  # ELOOP: a symbolic link, which could lead anywhere on the disk
        raise StoreCorruptError(path, None, f"cannot be read as a series ({exc.strerror})") from exc


def _ranges(mine: npt.NDArray[np.void], data_size: int, path: Path) -> list[tuple[int, int]]:
    """The series' byte ranges in ``points.bin``, adjacent segments merged; malformed ones refused."""
    starts = mine["start"].astype(np.int64)
    ends = starts + mine["size"].astype(np.int64)
    bad = np.flatnonzero(
        (mine["size"] == 0)
        | (mine["size"] % RECORD_SIZE != 0)
        | (starts % RECORD_SIZE != 0)
        | (ends > data_size)
    )
    if bad.size:
        first = int(bad[0])
        raise StoreCorruptError(
            path.with_name(SEGMENTS_FILE),
            None,
            f"has a segment of bytes {int(starts[first])}-{int(ends[first])} ({POINTS_FILE} holds "
            f"{data_size} bytes); `runtel verify` names the damage",
        )
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    return list(
        zip(
            starts[np.concatenate([[0], breaks])].tolist(),
            ends[np.append(breaks, len(ends)) - 1].tolist(),
            strict=True,
        )
    )


def _from_map(mapped: mmap.mmap, ranges: list[tuple[int, int]], total: int) -> npt.NDArray[np.void]:
    """One range: a view of the map (no copy). Several: gathered into one array, the map closed."""
    if len(ranges) == 1:
        start, end = ranges[0]
        return np.frombuffer(mapped, SERIES_DTYPE, count=(end - start) // RECORD_SIZE, offset=start)
    records = np.empty(total // RECORD_SIZE, SERIES_DTYPE)
    target = records.view(np.uint8)
    source = np.frombuffer(mapped, np.uint8)
    at = 0
    for start, end in ranges:
        target[at : at + end - start] = source[start:end]
        at += end - start
    del source
    mapped.close()
    records.flags.writeable = False
    return records
