"""Many runs and long series: lookups that read only the matching folders, memory-mapped reads exact."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.errors import RunNotFoundError
from runtel.records import SERIES_DTYPE
from runtel.store._series import MMAP_MIN_BYTES
from runtel.store.scan import scan

CLONES = 300


def _clone(template: Path, base: Path, name: str, run_id: str, start: float) -> Path:
    folder = base / f"{name}_{run_id[:8]}"
    shutil.copytree(template, folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata.update(id=run_id, name=name, start_time=start)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


@pytest.fixture
def many(base_dir: Path) -> dict[str, str]:
    """A real run and ``CLONES`` copies of its folder under other ids and names (name -> id)."""
    with runtel.init(project="p", name="template", base_dir=str(base_dir)) as run:
        run.log({"loss": 0.5})
    template = run.dir
    ids = {"template": run.id}
    for number in range(CLONES):
        run_id = uuid.uuid4().hex
        _clone(template, base_dir, f"run-{number:03d}", run_id, 1e9 + number)
        ids[f"run-{number:03d}"] = run_id
    return ids


_opened: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None and str(args[0]).endswith("metadata.json"):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


def _metadata_files_read(find: Callable[[], object]) -> set[str]:
    """The folders whose ``metadata.json`` ``find()`` opened (a Python audit hook sees every open)."""
    global _opened
    _opened = []
    try:
        find()
        return {Path(path).parent.name for path in _opened}
    finally:
        _opened = None


def test_lookup_by_id_prefix_and_name_reads_only_the_matching_folder(
    many: dict[str, str], base_dir: Path
) -> None:
    wanted = many["run-150"]
    folder = f"run-150_{wanted[:8]}"
    store = runtel.Store(base_dir)
    for key in (wanted, wanted[:8], wanted[:13].upper(), folder, "run-150"):
        assert _metadata_files_read(lambda key=key: store.run(key)) == {folder}, key
        assert store.run(key).id == wanted
    assert len(store.runs()) == CLONES + 1 and scan(base_dir).skipped == []


def test_the_latest_run_of_a_name_wins(many: dict[str, str], base_dir: Path) -> None:
    template = next(base_dir.glob("template_*"))
    later = uuid.uuid4().hex
    _clone(template, base_dir, "run-007", later, 2e9)
    assert runtel.Store(base_dir).run("run-007").id == later


def test_a_renamed_folder_is_still_found(many: dict[str, str], base_dir: Path) -> None:
    wanted = many["run-042"]
    os.rename(base_dir / f"run-042_{wanted[:8]}", base_dir / "renamed by hand")
    store = runtel.Store(base_dir)
    assert store.run(wanted).dir.name == "renamed by hand"
    assert store.run(wanted[:8]).id == wanted
    assert store.run("run-042").id == wanted


def test_an_ambiguous_or_short_prefix_is_refused_by_name(many: dict[str, str], base_dir: Path) -> None:
    template = next(base_dir.glob("template_*"))
    first, second = "abcdef01" + "0" * 24, "abcdef01" + "1" * 24
    _clone(template, base_dir, "twin", first, 3e9)
    _clone(template, base_dir, "twin2", second, 3e9 + 1)
    store = runtel.Store(base_dir)
    with pytest.raises(RunNotFoundError, match="matches 2 runs"):
        store.run("abcdef01")
    assert store.run("abcdef010").id == first
    with pytest.raises(RunNotFoundError, match="no run 'abcdef'"):
        store.run("abcdef")


def test_memory_mapped_history_is_exactly_what_was_logged(base_dir: Path) -> None:
    values = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, 1 / 3])
    steps = np.array([0, 1, 2, 2, 1, 10**15, 7, 8])
    with runtel.init(project="p", name="exact", base_dir=str(base_dir)) as run:
        for step, value in zip(steps.tolist(), values.tolist(), strict=True):
            run.log({"m": value}, step=step)
    stored = runtel.Store(base_dir).run("exact")
    got_steps, got_times, got_values = stored.history("m")
    assert got_values.tobytes() == values.tobytes()
    assert got_steps.tolist() == steps.tolist()
    assert got_times.size == values.size and bool(np.all(np.diff(got_times) >= 0))
    assert not got_values.flags.writeable


def test_a_long_series_is_memory_mapped_and_exact(base_dir: Path) -> None:
    count = MMAP_MIN_BYTES // SERIES_DTYPE.itemsize + 1000
    values = np.sin(np.arange(count) / 7.0)
    values[::1000] = np.nan
    with runtel.init(project="p", name="long", base_dir=str(base_dir)) as run:
        for value in values.tolist():
            run.log({"m": value})
    steps, _, got = runtel.Store(base_dir).run("long").history("m")
    owner: object = got
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, memoryview) and isinstance(owner.obj, mmap.mmap)
    assert got.tobytes() == values.tobytes() and steps.tolist() == list(range(count))


def test_a_live_series_shows_new_points_and_ignores_a_torn_record(base_dir: Path) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir), flush_interval=3600) as run:
        run.log({"m": 1.0})
        run.flush()
        stored = runtel.Store(base_dir).run("live")
        first = stored.history("m")[2]
        run.log({"m": 2.0, "other": 3.0})
        run.flush()
        with (stored.dir / "metrics" / "points.bin").open("ab") as handle:
            handle.write(b"\x01" * 5)  # a record the writer is in the middle of
        assert first.tolist() == [1.0]
        assert stored.history("m")[2].tolist() == [1.0, 2.0]
        assert stored.history("other")[2].tolist() == [3.0]
        with (stored.dir / "metrics" / "points.bin").open("r+b") as handle:
            handle.truncate(3 * 32)  # the writer's own file: leave it as it was
