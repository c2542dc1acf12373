"""Write faults tried for real, with what was stored, lost and raised: the table in docs/reliability.md.

Needs root (it mounts 1 MiB tmpfs file systems). Run with ``sudo python bench/bench_write_faults.py``.
Each scenario logs two metrics a step; "logged" counts points, "stored" is what a fresh ``Store`` reads
back, "counted lost" is the store's own report in ``summary.json``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import md_table


@contextlib.contextmanager
def _tmpfs(options: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="runtel-faults-") as tmp:
        disk = Path(tmp) / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], check=True)
        try:
            yield disk
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


def _log(run: object, steps: range) -> None:
    for step in steps:
        run.log({"loss": float(step), "acc": step / 1e6})  # type: ignore[attr-defined]


def _outcome(base: Path, run_id: str, logged: int, error: str) -> list[str]:
    import runtel

    stored_run = runtel.Store(base).run(run_id)
    stored = sum(stored_run.history(name)[0].size for name in stored_run.metrics())
    steps = stored_run.history("loss")[0].tolist()
    exact = steps == sorted(set(steps))
    report = stored_run.summary().get("exporters", {}).get("local", {})
    lost = report.get("points_undelivered")
    return [
        f"{logged:,}",
        f"{stored:,}",
        "-" if lost is None else f"{lost:,}",
        "yes" if exact else "**no**",
        error,
    ]


def full_then_freed(disk: Path) -> list[str]:
    import runtel

    run = runtel.init(project="faults", base_dir=str(disk / "runs"), flush_interval=0.05, system_interval=0)
    _log(run, range(1000))
    run.flush()
    filler = _fill(disk)
    _log(run, range(1000, 9000))
    run.flush()
    filler.unlink()
    deadline = time.monotonic() + 15
    while not run.flush() and time.monotonic() < deadline:
        time.sleep(0.05)
    _log(run, range(9000, 9500))
    run.finish()
    return _outcome(disk / "runs", run.id, 19_000, "a warning once, none at finish")


def full_at_finish(disk: Path) -> list[str]:
    import runtel

    run = runtel.init(project="faults", base_dir=str(disk / "runs"), flush_interval=0.05, system_interval=0)
    _log(run, range(500))
    run.flush()
    filler = _fill(disk)
    _log(run, range(500, 20_000))
    lost = "?"
    try:
        run.finish()
        error = "none"
    except runtel.StoreWriteError as exc:
        error = f"`StoreWriteError` from finish() (errno {errno.errorcode.get(exc.errno or 0, exc.errno)})"
        lost = str(exc).split("): ", 1)[1].split(" points", 1)[0]
    filler.unlink()
    row = _outcome(disk / "runs", run.id, 40_000, error)
    row[2] = f"{int(lost):,} (in the error: summary.json could not be written)"
    return row


def backlog_overflow(disk: Path) -> list[str]:
    import runtel

    run = runtel.init(
        project="faults",
        base_dir=str(disk / "runs"),
        flush_interval=0.05,
        system_interval=0,
        store_backlog_points=2000,
    )
    _log(run, range(1))
    run.flush()
    filler = _fill(disk)
    for start in range(1, 10_001, 500):
        _log(run, range(start, start + 500))
        run.flush()
    filler.unlink()
    try:
        run.finish()
        error = "none"
    except runtel.StoreWriteError:
        error = "an error when the backlog passed its limit, `StoreWriteError` from finish()"
    return _outcome(disk / "runs", run.id, 20_002, error)


def unencodable_params(disk: Path) -> list[str]:
    import runtel

    run = runtel.init(project="faults", base_dir=str(disk / "runs"), system_interval=0)
    _log(run, range(500))
    try:
        run.log_params({"note": "bad \udc80 byte"})
    except runtel.InvalidParamError:
        _log(run, range(500, 1000))
        run.finish()
        return _outcome(disk / "runs", run.id, 2000, "`InvalidParamError` at the call")
    _log(run, range(500, 1000))
    try:
        run.finish()
        error = "none"
    except runtel.StoreWriteError:
        error = "an error naming the record, `StoreWriteError` from finish()"
    return _outcome(disk / "runs", run.id, 2000, error)


def read_only(disk: Path) -> list[str]:
    import runtel

    try:
        runtel.init(project="faults", base_dir=str(disk / "runs"), system_interval=0)
    except runtel.StoreWriteError as exc:
        return [
            "0",
            "0",
            "0",
            "yes",
            f"`StoreWriteError` at init (errno {errno.errorcode.get(exc.errno or 0)})",
        ]
    return ["0", "0", "0", "yes", "**none**"]


SCENARIOS: list[tuple[str, str, Callable[[Path], list[str]]]] = [
    ("disk full for 8,000 steps, then freed", "size=1m", full_then_freed),
    ("disk full until after finish()", "size=1m", full_at_finish),
    ("disk full, backlog limit 2,000 points passed", "size=1m", backlog_overflow),
    ("a parameter with a lone surrogate between log calls", "size=1m", unencodable_params),
    ("read-only base_dir", "ro,size=1m", read_only),
]


def main() -> int:
    if os.geteuid() != 0:
        print("bench_write_faults mounts tmpfs file systems: run it as root", file=sys.stderr)
        return 1
    rows = []
    for label, options, scenario in SCENARIOS:
        with _tmpfs(options) as disk:
            rows.append([label, *scenario(disk)])
    headers = ["fault", "points logged", "stored", "counted lost", "stored exact (no dup/gap)", "error given"]
    print(md_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
