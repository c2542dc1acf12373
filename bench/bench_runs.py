"""runtel with many runs and long series: ``Store.runs()``, ``Store.run(id)``, ``runtel ls``, cold reads.

Every figure is the median over fresh processes (nothing cached in memory; the page cache is warm, as
it is when someone lists runs they just trained). ``--before DIR`` times the same cases against another
copy of the package (a folder holding ``runtel/``, e.g. an export of ``main``) in the same run, so the
table shows before and after side by side. After the other cases, every run of the store is edited
through the public API (``run.tags.add`` then ``run.set_note``: two ``edits.jsonl`` lines, each
fsynced) and the listing cases are timed again on the edited runs.

    python bench/bench_runs.py [--runs 10000] [--points 10000000] [--trials 3] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _common import log, machine_table, md_table

TARGET_RUNS_S = 0.5
TARGET_LS_S = 1.0
TARGET_COLD_S = 0.5

#: Timed in a fresh interpreter; prints one JSON object of seconds.
CASES = {
    "Store.runs()": "t = clock(); runs = Store(BASE).runs(); out(len(runs), t)",
    "Store.run(id)": "t = clock(); Store(BASE).run(ID); out(0, t)",
    "Store.run(id8)": "t = clock(); Store(BASE).run(ID[:8]); out(0, t)",
    "Store.run(name)": "t = clock(); Store(BASE).run(NAME); out(0, t)",
    "runtel ls (table)": "t = clock(); quiet(['ls', '--base-dir', BASE]); out(0, t)",
    "runtel ls --json": "t = clock(); quiet(['ls', '--base-dir', BASE, '--json']); out(0, t)",
    "runtel ls (table), whole command": (
        "t = clock(); subprocess.run([sys.executable, '-m', 'runtel.cli', 'ls', '--base-dir', BASE], "
        "stdout=subprocess.DEVNULL, check=True); out_children(t)"
    ),
    "1M-point history() after Store.run(id)": (
        "run = Store(BASE).run(BIG); t = clock(); s, w, v = run.history('m'); float(v.sum()); out(0, t)"
    ),
    "1M-point history(), store of one run": (
        "run = Store(ALONE).run(BIG); t = clock(); s, w, v = run.history('m'); float(v.sum()); out(0, t)"
    ),
    "cold history() of 10M points": "run = Store(COLD).run(HUGE); t = clock(); run.history('m'); out(0, t)",
    "cold history() + sum of 10M points": (
        "run = Store(COLD).run(HUGE); t = clock(); v = run.history('m')[2]; float(v.sum()); out(0, t)"
    ),
}
#: The listing cases, timed again once every run has been edited.
LISTINGS = ("Store.runs()", "runtel ls (table)", "runtel ls --json", "runtel ls (table), whole command")
EDITED_CASES = {f"{case}, edited runs": CASES[case] for case in LISTINGS}
PRELUDE = """
import contextlib, io, json, resource, subprocess, sys, time
from runtel import Store
from runtel.cli import main
def clock():
    return time.perf_counter(), time.process_time()
def quiet(argv):
    with open('/dev/null', 'w') as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        assert main(argv) == 0
def out(n, t):
    print(json.dumps([time.perf_counter() - t[0], time.process_time() - t[1]]))
def out_children(t):  # a whole command in a child process: its start, imports, listing and exit
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps([time.perf_counter() - t[0], used.ru_utime + used.ru_stime]))
"""


def template_run(base: Path) -> Path:
    """One real run (3 metrics x 50 steps, params, 2 epochs), the model every cloned folder copies."""
    import runtel

    with runtel.init(project="bench", name="template", base_dir=str(base), config={"lr": 0.1}) as run:
        for _ in run.epochs(2):
            for _ in range(25):
                run.log({"loss": 1.0 / (run.step + 1), "acc": run.step / 50, "lr": 0.1})
    return run.dir


def clone(template: Path, base: Path, name: str, start: float) -> tuple[str, Path]:
    """A copy of ``template`` as another run: new id, name and start; data files are hard links."""
    run_id = uuid.uuid4().hex
    folder = base / f"{name}_{run_id[:8]}"
    shutil.copytree(template, folder, copy_function=os.link)
    metadata = json.loads((template / "metadata.json").read_text())
    metadata.update(id=run_id, trace_id=run_id, name=name, start_time=start)
    (folder / "metadata.json").unlink()
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return run_id, folder


def with_series(template: Path, base: Path, name: str, points: int) -> str:
    """A clone whose metric ``m`` holds ``points`` records, written in the store's format (blocks of
    100,000 points appended to ``metrics/points.bin``, one index entry each, as a run writes them)."""
    import zlib

    from runtel.store._blocks import SEGMENT_DTYPE

    run_id, folder = clone(template, base, name, time.time())
    metrics = folder / "metrics"
    records = np.zeros(points, dtype=[("step", "<i8"), ("time", "<f8"), ("value", "<f8"), ("span_id", "<u8")])
    records["step"] = np.arange(points)
    records["time"] = 1.7e9 + np.arange(points) * 1e-3
    records["value"] = np.sin(np.arange(points) / 1e4)
    index = json.loads((metrics / "index.json").read_text())
    number = max(index["series"].values()) + 1
    index["series"]["m"] = number
    data, entries = (metrics / "points.bin").read_bytes(), (metrics / "points.idx").read_bytes()
    for file_name in ("index.json", "points.bin", "points.idx"):  # hard links to the template's
        (metrics / file_name).unlink()
    (metrics / "index.json").write_text(json.dumps(index))
    block = 100_000
    new = np.zeros(-(-points // block), SEGMENT_DTYPE)
    for k, first in enumerate(range(0, points, block)):
        chunk = records[first : first + block].tobytes()
        new[k] = (number, len(chunk), len(data) + first * records.itemsize, zlib.crc32(chunk), 0)
    with (metrics / "points.bin").open("wb") as handle:
        handle.write(data)
        records.tofile(handle)
    (metrics / "points.idx").write_bytes(entries + new.tobytes())
    return run_id


def edit_every_run(base: Path) -> None:
    """A tag and a note on every run, the way a user adds them (``fsync`` and a re-read each)."""
    from runtel import Store

    for number, run in enumerate(Store(base).runs()):
        run.tags.add("baseline")
        run.set_note(f"seed {number}: kept for the comparison")


def timed_seconds(code: str, env: dict[str, str], trials: int, prelude: str = PRELUDE) -> tuple[float, float]:
    """Median wall and CPU seconds of ``code`` over ``trials`` fresh processes (``prelude`` first)."""
    wall, cpu = [], []
    for _ in range(trials):
        done = subprocess.run(
            [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1])
        seconds = json.loads(done.stdout.strip().splitlines()[-1])
        wall.append(seconds[0])
        cpu.append(seconds[1])
    return statistics.median(wall), statistics.median(cpu)


def timed(code: str, env: dict[str, str], trials: int) -> str:
    """Median wall seconds, and median CPU seconds of the process (what a shared machine blurs least)."""
    wall, cpu = timed_seconds(code, env, trials)
    return f"{wall:.3f} s ({cpu:.3f} s CPU)"


def clone_runs(template: Path, base: Path, runs: int) -> list[tuple[str, Path]]:
    """``runs`` clones of ``template`` named ``run-00000``..., started a second apart, oldest first."""
    log(f"cloning {runs:,} runs...")
    started = time.time() - runs
    return [clone(template, base, f"run-{i:05d}", started + i) for i in range(runs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--before", default=None, help="folder holding the runtel package to compare with")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="runtel-bench-runs-") as scratch:
        root = Path(scratch)
        template = template_run(root / "template")
        base, alone, cold = root / "many", root / "alone", root / "cold"
        ids = [run_id for run_id, _ in clone_runs(template, base, args.runs)]
        big = with_series(template, base, "big", 1_000_000)
        shutil.copytree(next(base.glob(f"big_{big[:8]}")), alone / f"big_{big[:8]}")
        huge = with_series(template, cold, "huge", args.points)
        names = {
            "BASE": base,
            "ALONE": alone,
            "COLD": cold,
            "ID": ids[len(ids) // 2],
            "BIG": big,
            "HUGE": huge,
        }
        constants = "".join(f"{key} = {str(value)!r}\n" for key, value in names.items())
        constants += f"NAME = 'run-{len(ids) // 2:05d}'\n"
        trees = {"after": os.environ.get("PYTHONPATH", "")}
        if args.before:
            trees = {"before": args.before, **trees}
        results: dict[str, dict[str, str]] = {}
        for cases in (CASES, EDITED_CASES):
            if cases is EDITED_CASES:
                log(f"editing {args.runs + 1:,} runs...")
                edit_every_run(base)
            for label, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": tree, "RUNTEL_SYSTEM_INTERVAL": "0"}
                for case, code in cases.items():
                    try:
                        value = timed(constants + code, env, args.trials)
                    except RuntimeError as exc:
                        value = f"failed: {exc}"
                    results.setdefault(case, {})[label] = value
                    log(f"{label:6} {case}: {value}")

    targets = {
        "Store.runs()": f"< {TARGET_RUNS_S} s",
        "runtel ls (table)": f"< {TARGET_LS_S} s",
        "runtel ls --json": f"< {TARGET_LS_S} s",
        "cold history() of 10M points": f"< {TARGET_COLD_S} s",
    }
    targets.update(
        {edited: targets.get(case, "") for edited, case in zip(EDITED_CASES, LISTINGS, strict=True)}
    )
    print(machine_table())
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\n{args.runs:,} runs in the store; {args.points:,}-point series; medians of {args.trials} fresh "
        f"processes; wall time (CPU time of the process); load average at the end {load}\n"
    )
    header = ["case", *trees, "target"]
    rows = [
        [case, *(results[case][label] for label in trees), targets.get(case, "")]
        for case in {**CASES, **EDITED_CASES}
    ]
    print(md_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
