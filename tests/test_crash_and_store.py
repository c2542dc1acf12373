"""Crash safety of the run folder, and many writers in one store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import runtel
from runtel.records import SERIES_DTYPE
from runtel.store._blocks import SEGMENT_DTYPE

from .conftest import run_python

TRAINING_SCRIPT = """
import sys, time, runtel
run = runtel.init(project="crash", name="killed", base_dir=sys.argv[1], flush_interval=0.2)
print(run.id, flush=True)
step = 0
while True:
    run.log({"loss": float(step)})
    step += 1
    if step % 1000 == 0:
        time.sleep(0.01)
"""


def test_sigkilled_run_shows_crashed_with_flushed_points_intact(base_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", TRAINING_SCRIPT, str(base_dir)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    run_id = process.stdout.readline().strip()
    store = runtel.Store(base_dir)
    deadline = time.time() + 30
    while time.time() < deadline:
        metrics = store.run(run_id).metrics()
        if metrics and store.run(run_id).history("loss")[0].size > 20_000:
            break
        time.sleep(0.1)
    flushed = store.run(run_id).history("loss")[0].size
    process.send_signal(signal.SIGKILL)
    process.wait()

    stored = store.run(run_id)
    assert stored.status == "crashed"
    steps, _, values = stored.history("loss")
    assert steps.size >= flushed
    assert steps.tolist() == list(range(steps.size))
    assert values.tolist() == [float(s) for s in range(steps.size)]


def test_torn_last_record_is_ignored_on_read_and_repaired_on_reopen(run: runtel.Run) -> None:
    for i in range(10):
        run.log({"loss": float(i)})
    run.finish()
    series = run.dir / "metrics" / "points.bin"
    with series.open("ab") as handle:
        handle.write(b"\x01" * (SERIES_DTYPE.itemsize - 5))
    stored = runtel.Store(run.dir.parent).run(run.id)
    assert stored.history("loss")[2].tolist() == [float(i) for i in range(10)]

    from runtel.store.writer import StoreWriter

    StoreWriter(run.dir)  # re-opened for writing, as a resume does
    assert series.stat().st_size == 10 * SERIES_DTYPE.itemsize


def test_torn_event_line_is_skipped(run: runtel.Run) -> None:
    run.log_params({"lr": 0.1})
    run.finish()
    with (run.dir / "events.jsonl").open("a") as handle:
        handle.write('{"type": "params", "params": {"lr"')
    events = list(runtel.Store(run.dir.parent).run(run.id).events())
    assert [type(e).__name__ for e in events] == ["RunStarted", "ParamsLogged", "SpanEnded", "RunEnded"]


def test_the_points_file_is_numpy_fromfile_readable(run: runtel.Run) -> None:
    """As docs/user-guide.md shows it: the records, and the index saying whose they are."""
    run.log({"x": 1.5, "y": -2.0}, step=7)
    run.log({"x": 2.5}, step=8)
    run.finish()
    number = json.loads((run.dir / "metrics" / "index.json").read_text())["series"]["x"]
    records = np.fromfile(run.dir / "metrics" / "points.bin", dtype=SERIES_DTYPE)
    segments = np.fromfile(run.dir / "metrics" / "points.idx", dtype=SEGMENT_DTYPE)
    mine = segments[segments["series"] == number]
    x = np.concatenate(
        [records[s // 32 : (s + n) // 32] for s, n in zip(mine["start"], mine["size"], strict=True)]
    )
    assert x["step"].tolist() == [7, 8]
    assert x["value"].tolist() == [1.5, 2.5]


def test_two_processes_logging_two_runs_into_one_base_dir_are_both_complete(base_dir: Path) -> None:
    script = """
import sys, runtel
with runtel.init(project="parallel", name=sys.argv[2], base_dir=sys.argv[1]) as run:
    for i in range(200_000):
        run.log({"x": float(i), "y": -float(i)})
print(run.id)
"""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(base_dir), name], stdout=subprocess.PIPE, text=True
        )
        for name in ("first", "second")
    ]
    ids = [process.communicate(timeout=120)[0].strip() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    store = runtel.Store(base_dir)
    for run_id in ids:
        stored = store.run(run_id)
        assert stored.status == "completed"
        steps, _, x = stored.history("x")
        assert steps.tolist() == list(range(200_000))
        assert x.tolist() == [float(i) for i in range(200_000)]
        assert stored.history("y")[2].tolist() == [-float(i) for i in range(200_000)]


def test_forgotten_finish_is_done_at_exit(base_dir: Path) -> None:
    out = run_python(
        f"""
import runtel
run = runtel.init(project="p", name="forgot", base_dir={str(base_dir)!r})
run.log({{"loss": 0.25}})
print(run.id)
""",
        cwd=base_dir.parent,
    )
    stored = runtel.Store(base_dir).run(out.strip())
    assert stored.status == "completed"
    assert stored.history("loss")[2].tolist() == [0.25]


def test_uncaught_exception_at_top_level_marks_run_failed(base_dir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import runtel
run = runtel.init(project="p", name="boom", base_dir={str(base_dir)!r})
run.log({{"loss": 1.0}})
raise RuntimeError("diverged")
""",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    stored = runtel.Store(base_dir).run("boom")
    assert stored.status == "failed"
    assert "RuntimeError: diverged" in stored.summary()["error"]


def test_exception_in_context_manager_marks_failed_with_traceback_and_reraises(base_dir: Path) -> None:
    try:
        with runtel.init(project="p", name="ctx", base_dir=str(base_dir)) as run:
            run.log({"loss": 1.0})
            raise ValueError("bad batch")
    except ValueError:
        pass
    else:
        raise AssertionError("the exception was swallowed")
    stored = runtel.Store(base_dir).run(run.id)
    assert stored.status == "failed"
    assert "ValueError: bad batch" in stored.summary()["error"]
    assert "Traceback" in stored.summary()["error"]
    assert stored.history("loss")[2].tolist() == [1.0]


def test_store_queries_filter_and_compare(base_dir: Path) -> None:
    ids = []
    for name, scale in (("a", 1.0), ("b", 2.0)):
        with runtel.init(project="cmp", name=name, base_dir=str(base_dir)) as run:
            for step, acc in enumerate([0.1, 0.5, 0.3]):
                run.log({"val/acc": acc * scale, "val/loss": 1 - acc}, step=step)
        ids.append(run.id)
    with runtel.init(project="other", name="c", base_dir=str(base_dir)):
        pass
    store = runtel.Store(base_dir)
    assert [r.name for r in store.runs(project="cmp")] == ["a", "b"]
    assert [r.name for r in store.runs(status="completed")] == ["a", "b", "c"]
    assert store.run("b").id == ids[1]
    assert store.run(ids[0][:8]).name == "a"
    assert store.run(ids[1]).best("val/acc", mode="max") == (1.0, 1)
    assert store.run(ids[1]).best("val/loss") == (0.5, 1)
    rows = store.compare(ids, metrics=["val/acc"])
    assert [(r["name"], r["best"], r["last"], r["min"], r["max"], r["count"]) for r in rows] == [
        ("a", 0.5, 0.3, 0.1, 0.5, 3),
        ("b", 1.0, 0.6, 0.2, 1.0, 3),
    ]
    try:
        store.run("nope")
    except runtel.RunNotFoundError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected RunNotFoundError")


def test_unrelated_folders_are_skipped(base_dir: Path, run: runtel.Run) -> None:
    (base_dir / "not-a-run").mkdir()
    (base_dir / "stray.txt").write_text("x")
    assert [r.id for r in runtel.Store(base_dir).runs()] == [run.id]
