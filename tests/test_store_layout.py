"""The shared points file (``metrics/points.bin`` + ``points.idx``): exact reads, whether memory-mapped
or gathered from many blocks, thousands of series in three files, and folders of the older
one-file-per-series layout (``tests/data/legacy_v1``, written by that store) read, verified, resumed."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.errors import StoreCorruptError
from runtel.records import SERIES_DTYPE, MetricPoints, RunStarted
from runtel.store._blocks import SEGMENT_DTYPE, read_segments
from runtel.store._metrics import series_stats, verify_folder
from runtel.store._series import MMAP_MIN_BYTES
from runtel.store.scan import problems
from runtel.store.writer import StoreWriter

LEGACY_RUNS = Path(__file__).parent / "data" / "legacy_v1"
MAX_STEP = 2**63 - 1


def _legacy_copy(base_dir: Path) -> Path:
    (folder,) = LEGACY_RUNS.iterdir()
    return Path(shutil.copytree(folder, base_dir / folder.name))


def test_an_older_folder_reads_exactly_as_it_was_logged(base_dir: Path) -> None:
    folder = _legacy_copy(base_dir)
    stored = runtel.Store(base_dir).run(folder.name)
    assert stored.metrics() == ["loss", "acc", "odd/ünï"]
    steps, _, values = stored.history("loss")
    assert steps.tolist() == [0, 1, 2, 3, 4, 5, 2**62, MAX_STEP]
    assert values[:5].tolist() == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert math.isnan(values[5]) and values[6] == -math.inf and values[7] == 5e-324
    odd = stored.history("odd/ünï")[2]
    assert odd.tobytes() == np.array([math.inf, -0.0, 1.7976931348623157e308]).tobytes()
    assert stored.history("acc")[0].tolist() == list(range(5))
    assert series_stats(folder / "metrics") == stored.summary()["metrics"]
    assert problems(stored) == []
    assert {check.status for check in verify_folder(folder / "metrics").values()} == {"ok"}


def test_resuming_an_older_folder_converts_it_and_appends(base_dir: Path) -> None:
    folder = _legacy_copy(base_dir)
    before = runtel.Store(base_dir).run(folder.name)
    old = {name: [a.tobytes() for a in before.history(name)] for name in before.metrics()}
    with runtel.init(project="legacy", base_dir=str(base_dir), resume=before.id) as run:
        run.log({"acc": 5.0, "new": 1.0}, step=5)
    after = runtel.Store(base_dir).run(before.id)
    assert after.metrics() == ["loss", "acc", "odd/ünï", "new"]
    for name in ("loss", "odd/ünï"):
        assert [a.tobytes() for a in after.history(name)] == old[name]
    assert after.history("acc")[2].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert after.history("new")[0].tolist() == [5]
    assert sorted(p.name for p in (folder / "metrics").iterdir()) == [
        "index.json",
        "points.bin",
        "points.idx",
    ]
    assert json.loads((folder / "metrics" / "index.json").read_text())["version"] == 2
    assert {check.status for check in verify_folder(folder / "metrics").values()} == {"ok"}


def test_a_damaged_older_folder_is_not_converted(base_dir: Path) -> None:
    folder = _legacy_copy(base_dir)
    series = folder / "metrics" / "s000002.bin"
    data = bytearray(series.read_bytes())
    data[20] ^= 0x01
    series.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match="damaged points of 'acc'"):
        StoreWriter(folder)
    assert (folder / "metrics" / "s000002.bin").exists() and not (folder / "metrics" / "points.bin").exists()


def _block(names: tuple[str, ...], per_series: int, first_step: int) -> MetricPoints:
    n = per_series * len(names)
    steps = np.arange(first_step, first_step + n, dtype=np.int64)
    values = np.sin(steps / 3.0)
    values[::7] = np.nan
    values[1::11] = np.inf
    values[2::13] = -np.inf
    return MetricPoints(
        names=names,
        index=np.tile(np.arange(len(names), dtype=np.int32), per_series),
        steps=steps,
        times=steps * 0.5,
        values=values,
        span_ids=np.full(n, 2**64 - 1, np.uint64),
    )


@pytest.mark.parametrize(
    "per_series", [10, MMAP_MIN_BYTES // SERIES_DTYPE.itemsize // 3 + 1], ids=["read", "mapped"]
)
def test_a_series_gathered_from_many_blocks_is_exactly_what_was_written(
    tmp_path: Path, per_series: int
) -> None:
    """Blocks interleave two series, so each read gathers segments (a copy, from a memory map when long)."""
    writer = StoreWriter(tmp_path / "run_0badc0de")
    blocks = [_block(("a", "b"), per_series, k * 2 * per_series) for k in range(4)]
    blocks.append(_block(("a",), 1, MAX_STEP))  # the largest step there is
    writer.write([RunStarted("0badc0de", "r", "p", 1.0, {}), *blocks])
    writer.close({})
    records = {name: [] for name in ("a", "b")}
    for block in blocks:
        for k, name in enumerate(block.names):
            mine = block.index == k
            part = np.empty(int(mine.sum()), SERIES_DTYPE)
            part["step"], part["time"] = block.steps[mine], block.times[mine]
            part["value"], part["span_id"] = block.values[mine], block.span_ids[mine]
            records[name].append(part)
    stored = runtel.Store(tmp_path).run("run_0badc0de")
    for name, parts in records.items():
        expected = np.concatenate(parts)
        steps, times, values = stored.history(name)
        assert steps.tobytes() == expected["step"].tobytes()
        assert times.tobytes() == expected["time"].tobytes()
        assert values.tobytes() == expected["value"].tobytes()
        assert stored.span_ids(name).tolist() == expected["span_id"].tolist()
        assert not values.flags.writeable
    assert stored.history("a")[0][-1] == MAX_STEP


def test_thousands_of_series_are_three_files_and_read_back_every_point(base_dir: Path) -> None:
    names = [f"layer{j // 100}/unit{j % 100}" for j in range(3_000)]
    with runtel.init(project="p", name="wide", base_dir=str(base_dir), system_interval=0) as run:
        for i in range(300):
            first = (i * 100) % len(names)
            run.log(dict.fromkeys(names[first : first + 100], float(i)), step=i)
    stored = runtel.Store(base_dir).run("wide")
    assert sorted(p.name for p in (stored.dir / "metrics").iterdir()) == [
        "index.json",
        "points.bin",
        "points.idx",
    ]
    assert stored.metrics() == names
    for j, name in enumerate(names):
        steps, _, values = stored.history(name)
        expected = [i for i in range(300) if (i * 100) % 3_000 == (j // 100) * 100]
        assert steps.tolist() == expected and values.tolist() == [float(i) for i in expected]
    summary = stored.summary()["metrics"]
    assert sum(item["count"] for item in summary.values()) == 30_000
    assert series_stats(stored.dir / "metrics") == summary


def test_an_entry_garbled_before_good_ones_stops_a_resume(tmp_path: Path) -> None:
    """Only a tail the disk never got is cut on resume; damage inside the index is never cut away."""
    writer = StoreWriter(tmp_path / "run_feedf00d")
    writer.write([_block(("a",), 10, 0), _block(("a",), 10, 10), _block(("a",), 10, 20)])
    writer.close({})
    index = tmp_path / "run_feedf00d" / "metrics" / "points.idx"
    entries = np.fromfile(index, dtype=SEGMENT_DTYPE)
    entries[1]["start"] += 32
    entries.tofile(index)
    with pytest.raises(StoreCorruptError, match="entry 1"):
        StoreWriter(tmp_path / "run_feedf00d")
    assert index.stat().st_size == 3 * SEGMENT_DTYPE.itemsize


def test_entries_whose_bytes_never_reached_the_disk_are_cut_on_resume(tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path / "run_0ddba11d")
    writer.write([RunStarted("0ddba11d", "r", "p", 1.0, {}), _block(("a",), 10, 0), _block(("a",), 10, 10)])
    writer.close({})
    points = tmp_path / "run_0ddba11d" / "metrics" / "points.bin"
    with points.open("r+b") as handle:
        handle.truncate(15 * SERIES_DTYPE.itemsize + 3)  # the second block half there
    again = StoreWriter(tmp_path / "run_0ddba11d")
    assert len(read_segments(points.parent)) == 1 and points.stat().st_size == 10 * SERIES_DTYPE.itemsize
    again.write([_block(("a",), 10, 10)])
    again.close({})
    assert runtel.Store(tmp_path).run("run_0ddba11d").history("a")[0].tolist() == list(range(20))
