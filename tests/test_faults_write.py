"""Write faults for real: a full disk (a 1 MiB tmpfs filled and freed), a read-only base folder.

Mounting needs root; CI runs as root. Anywhere else these tests fail with the reason rather than
skip, so a fault that was never tried is never reported as survived.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtel
from runtel.run import active_runs


def _mount(target: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("the write-fault tests mount a tmpfs and must run as root (CI does); run them as root")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system of its own."""
    disk = tmp_path / "disk"
    _mount(disk, "size=1m")
    yield disk
    for run in active_runs():  # a failed test's run must not write on after the unmount
        with contextlib.suppress(runtel.StoreWriteError):
            run.finish()
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only file system: root ignores permission bits, not a read-only mount."""
    folder = tmp_path / "ro"
    _mount(folder, "ro,size=1m")
    with pytest.raises(OSError) as refused:
        (folder / "probe").write_text("x")
    assert refused.value.errno == errno.EROFS
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; the filler file, to delete when space should come back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _until(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]


def test_a_full_disk_warns_once_keeps_a_backlog_and_writes_it_when_space_returns(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runtel")
    run = runtel.init(project="p", base_dir=str(small_disk / "runs"), flush_interval=0.05)
    for step in range(1000):
        run.log({"loss": float(step), "acc": step / 1000})
    assert run.flush()
    filler = _fill(small_disk)
    for step in range(1000, 9000):
        run.log({"loss": float(step), "acc": step / 1000})
        if step % 1000 == 999:
            assert not run.flush()  # the store says it is behind
    assert len(_store_warnings(caplog)) == 1
    assert "No space left on device" in _store_warnings(caplog)[0]
    filler.unlink()
    stored = runtel.Store(small_disk / "runs")
    _until(lambda: stored.run(run.id).history("acc")[0].size == 9000)  # by itself, nothing new logged
    assert run.flush()
    for step in range(9000, 9500):
        run.log({"loss": float(step), "acc": step / 1000})
    run.finish()
    stored = runtel.Store(small_disk / "runs").run(run.id)
    assert stored.status == "completed"
    for name in ("loss", "acc"):
        assert stored.history(name)[0].tolist() == list(range(9500))  # no point twice, none skipped
    summary = stored.summary()
    assert summary["metrics"]["loss"]["count"] == 9500
    report = summary["exporters"]["local"]
    assert (report["status"], report["points_undelivered"]) == ("ok", 0)
    assert report["retries"] >= 1


def test_a_disk_still_full_at_finish_is_a_store_write_error_and_what_is_stored_is_exact(
    small_disk: Path,
) -> None:
    run = runtel.init(project="p", base_dir=str(small_disk / "runs"), flush_interval=0.05)
    for step in range(500):
        run.log({"loss": float(step)})
    assert run.flush()
    filler = _fill(small_disk)
    for step in range(500, 20000):
        run.log({"loss": float(step)})
    with pytest.raises(runtel.StoreWriteError) as raised:
        run.finish()
    assert raised.value.errno == errno.ENOSPC
    assert str(small_disk) in raised.value.path and "points" in str(raised.value)
    filler.unlink()
    steps = runtel.Store(small_disk / "runs").run(run.id).history("loss")[0].tolist()
    assert 500 <= len(steps) < 20000 and steps == list(range(len(steps)))  # a clean prefix, no garbage


def test_past_the_backlog_limit_the_oldest_points_are_counted_as_lost(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runtel")
    run = runtel.init(
        project="p", base_dir=str(small_disk / "runs"), flush_interval=0.05, store_backlog_points=2000
    )
    run.log({"loss": 0.0})
    assert run.flush()
    filler = _fill(small_disk)
    for step in range(1, 10001):
        run.log({"loss": float(step)})
        if step % 500 == 0:
            run.flush()
    filler.unlink()
    with pytest.raises(runtel.StoreWriteError, match="points"):
        run.finish()
    stored = runtel.Store(small_disk / "runs").run(run.id)
    steps = stored.history("loss")[0].tolist()
    report = stored.summary()["exporters"]["local"]
    assert len(steps) + report["points_undelivered"] == 10001  # every point stored or counted as lost
    assert len(set(steps)) == len(steps) and steps == sorted(steps) and steps[-1] == 10000  # newest kept
    assert report["status"] == "failed" and report["points_undelivered"] > 0
    assert stored.summary()["metrics"]["loss"]["count"] == len(steps)
    assert stored.status == "failed" and stored.summary()["status"] == "failed"  # not "completed"
    assert json.loads((run.dir / "metadata.json").read_text())["status"] == "failed"
    assert "points" in stored.summary()["error"] and "not stored" in stored.summary()["error"]
    assert any("backlog passed 2000" in r.getMessage() for r in caplog.records)


def test_a_read_only_base_dir_is_a_clear_error_at_init(read_only_dir: Path) -> None:
    with pytest.raises(runtel.StoreWriteError, match="base_dir") as raised:
        runtel.init(project="p", base_dir=str(read_only_dir / "runs"))
    assert raised.value.errno == errno.EROFS and str(read_only_dir) in raised.value.path


def test_resuming_a_run_on_a_file_system_now_read_only_is_a_clear_error(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _mount(disk, "size=1m")
    try:
        with runtel.init(project="p", name="r", base_dir=str(disk)) as run:
            run.log({"x": 1.0})
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(runtel.StoreWriteError) as raised:
            runtel.init(project="p", base_dir=str(disk), resume=run.id)
        assert raised.value.errno == errno.EROFS
        assert json.loads((run.dir / "metadata.json").read_text())["status"] == "completed"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
