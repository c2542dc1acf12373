"""Converting a folder of the one-file-per-series layout to the shared points file, when a run
written by an older runtel is resumed (the writer only appends in the current layout).

Crash-safe: ``points.bin`` and ``points.idx`` are written under temporary names, synced and renamed
into place, then ``index.json`` version 2 replaces version 1 atomically: that rename is the commit.
Before it the folder still reads as version 1 (the new files are ignored, and rewritten by the
next attempt); after it the old ``sN.bin`` files and ``blocks.crc`` are deleted, and leftovers of a
crash in between are deleted by the next resume.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from pathlib import Path

import numpy as np

from runtel.errors import StoreCorruptError
from runtel.store._blocks import POINTS_FILE, SEGMENT_DTYPE, SEGMENTS_FILE
from runtel.store._jsonio import write_json_atomic
from runtel.store._layout import SERIES_INDEX
from runtel.store._series import (
    CRC_FILE,
    POINTS_LAYOUT,
    SeriesIndex,
    read_series,
    series_number,
    verify_legacy_folder,
)

_LEGACY_FILE = re.compile(r"s\d{1,9}\.bin")


def migrate_legacy(metrics_dir: Path, index: SeriesIndex) -> SeriesIndex:
    """The folder's series as one segment each of a new ``points.bin``; the version-2 index.

    A series whose bytes fail their CRC is not carried over under a fresh CRC (that would hide the
    damage): the folder is left as it is and :class:`~runtel.errors.StoreCorruptError` says which.
    """
    damaged = [
        (name, check)
        for name, check in verify_legacy_folder(metrics_dir, index).items()
        if check.status == "damaged"
    ]
    if damaged:
        name, check = damaged[0]
        raise StoreCorruptError(
            check.path,
            None,
            f"holds damaged points of {name or 'the CRC sidecar'!r} ({check.problem}); a run written by an "
            "older runtel is converted before it is resumed, and damaged points are not converted "
            "(`runtel verify` lists them)",
        )
    numbers: dict[str, int] = {}
    parts = []
    for name, file_name in index.series.items():
        numbers[name] = len(numbers) + 1
        number = series_number(file_name)
        parts.append(read_series(metrics_dir / file_name) if number is not None else np.empty(0))
    sizes = [part.nbytes for part in parts]
    entries = np.zeros(sum(size > 0 for size in sizes), SEGMENT_DTYPE)
    at = 0
    row = 0
    for number, (part, size) in enumerate(zip(parts, sizes, strict=True), 1):
        if size:
            entries[row] = (number, size, at, zlib.crc32(part.tobytes()), 0)
            at += size
            row += 1
    _write_synced(metrics_dir / POINTS_FILE, [part.tobytes() for part in parts if part.nbytes])
    _write_synced(metrics_dir / SEGMENTS_FILE, [entries.tobytes()])
    write_json_atomic(metrics_dir / SERIES_INDEX, {"version": POINTS_LAYOUT, "series": numbers}, indent=None)
    remove_legacy_files(metrics_dir)
    return SeriesIndex(POINTS_LAYOUT, numbers)


def remove_legacy_files(metrics_dir: Path) -> None:
    """The version-1 series files and CRC sidecar of a converted folder."""
    with os.scandir(metrics_dir) as entries:
        names = [
            entry.name for entry in entries if _LEGACY_FILE.fullmatch(entry.name) or entry.name == CRC_FILE
        ]
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (metrics_dir / name).unlink()


def _write_synced(path: Path, chunks: list[bytes]) -> None:
    """``chunks`` into ``path`` through a hidden temporary file, fsynced before the rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
