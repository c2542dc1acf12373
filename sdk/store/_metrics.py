"""A run's metric series whichever layout its folder was written in: the one door readers go through.

Folders written since the shared points file (``index.json`` version 2) are read by
:mod:`runtel.store._blocks`; folders written before it (version 1, one ``sN.bin`` per series) by
:mod:`runtel.store._series`, so runs stored by older versions keep reading, verifying and replaying.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtel.errors import StoreCorruptError
from runtel.store import _blocks
from runtel.store._layout import METRICS_DIR, SERIES_INDEX
from runtel.store._series import (
    LEGACY_LAYOUT,
    RECORD_SIZE,
    SIDECAR_KEY,
    SeriesIndex,
    SeriesIntegrity,
    legacy_stats,
    read_crc_entries,
    read_index,
    read_series,
    series_number,
    verify_legacy_folder,
    verify_series,
)
from runtel.store._untrusted import inside


def series_records(metrics_dir: Path, index: SeriesIndex, name: str) -> npt.NDArray[np.void]:
    """Every stored point of ``name`` (listed in ``index``), read-only; long series memory-mapped."""
    if index.version != LEGACY_LAYOUT:
        return _blocks.series_records(metrics_dir, index.series[name])
    file_name = index.series[name]
    run_dir = metrics_dir.parent
    path = inside(run_dir, f"{METRICS_DIR}/{file_name}", metrics_dir / SERIES_INDEX, name)
    if not path.exists() and legacy_written_bytes(metrics_dir, file_name):
        raise StoreCorruptError(path, None, f"is missing: the series {name!r} was written and is gone")
    return read_series(path)


def series_stats(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """Count, min, max and last value/step/time of every series, rebuilt from the stored points."""
    index = read_index(metrics_dir)
    if index.version == LEGACY_LAYOUT:
        return legacy_stats(metrics_dir, index)
    return _blocks.stats_by_series(metrics_dir, index.series)


def verify_folder(metrics_dir: Path, *, finished: bool = True) -> dict[str, SeriesIntegrity]:
    """Every stored block of every series checked against its CRC, by metric name (see
    :class:`~runtel.store._series.SeriesIntegrity`; damage of the index or sidecar under ``SIDECAR_KEY``)."""
    index = read_index(metrics_dir)
    if index.version == LEGACY_LAYOUT:
        return verify_legacy_folder(metrics_dir, index, finished=finished)
    return _blocks.verify_points(metrics_dir, index.series, finished=finished)


def point_counts(metrics_dir: Path) -> tuple[int, int]:
    """``(whole records, files ending in a torn record)``, from sizes and the index only (in the
    points layout, 1 when ``points.bin`` ends in bytes no index entry covers: a crash's torn tail,
    or in a live run the block whose entries are being appended)."""
    index = read_index(metrics_dir)
    if index.version != LEGACY_LAYOUT:
        return _blocks.count_records(metrics_dir)
    total = torn = 0
    for file_name in index.series.values():
        try:
            size = os.lstat(metrics_dir / file_name).st_size
        except FileNotFoundError:
            continue
        total += size // RECORD_SIZE
        torn += size % RECORD_SIZE != 0
    return total, torn


def problems(metrics_dir: Path, *, finished: bool) -> list[str]:
    """What is damaged, missing or cut short among the stored series, in words (empty if healthy)."""
    index = read_index(metrics_dir)
    if index.version != LEGACY_LAYOUT:
        found = []
        for name, check in _blocks.verify_points(metrics_dir, index.series, finished=finished).items():
            if check.status == "damaged":
                found.append(_damage_words(name, check))
            elif name == SIDECAR_KEY:
                found.append(
                    f"{_blocks.POINTS_FILE} ends in {check.unverified_bytes} bytes no index entry covers: "
                    "a torn record or block a crash cut short (ignored)"
                )
        return found
    found = []
    torn = 0
    for name, file_name in index.series.items():
        path = metrics_dir / file_name
        try:
            info = os.lstat(path)
        except OSError:
            if legacy_written_bytes(metrics_dir, file_name):
                found.append(f"series of {name!r} ({file_name}) is missing, though blocks of it were written")
            continue
        if not stat.S_ISREG(info.st_mode):
            found.append(f"series of {name!r} ({file_name}) is not a plain file (not read)")
            continue
        torn += info.st_size % RECORD_SIZE != 0
    found.extend(damaged_series(metrics_dir).values())
    if torn:
        found.append(f"{torn} series file(s) end in a torn record (ignored)")
    return found


def damaged_series(metrics_dir: Path) -> dict[str, str]:
    """Metric name to what the CRC check finds wrong in it, in words, for each damaged series (nothing
    to check counts as undamaged: a folder written before CRCs were kept, or a live run's newest block)."""
    index = read_index(metrics_dir)
    if index.version != LEGACY_LAYOUT:
        checks = _blocks.verify_points(metrics_dir, index.series, finished=False)
        return {
            name: _damage_words(name, check) for name, check in checks.items() if check.status == "damaged"
        }
    entries = read_crc_entries(metrics_dir)
    found = {}
    for name, file_name in index.series.items():
        path = metrics_dir / file_name
        if path.is_file() and not path.is_symlink():
            check = verify_series(path, entries)
            if check.status == "damaged":
                found[name] = _damage_words(name, check)
    return found


def legacy_written_bytes(metrics_dir: Path, file_name: str) -> int:
    """Bytes of version-1 series file ``file_name`` its CRC sidecar says were written (0 without one).

    An index entry comes before its file (a live run indexed a new series first), so only this tells
    a series not written yet from one whose file was lost.
    """
    number = series_number(file_name)
    try:
        entries = read_crc_entries(metrics_dir)
    except OSError:
        return 0
    if number is None or entries is None:
        return 0
    return int(entries["size"][entries["series"] == number].sum())


def _damage_words(name: str, check: SeriesIntegrity) -> str:
    start, end = check.damage_at or (0, 0)
    label = "the series index" if name == SIDECAR_KEY else f"series {name!r}"
    return f"{label} ({check.path.name}) is damaged at bytes {start}-{end}: {check.problem}"
