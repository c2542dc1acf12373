"""Editing runs: what edits cost a listing (``Store.runs()``, ``runtel ls``) and what one edit costs.

A store of cloned runs (see ``bench_runs.py``) is listed in fresh processes twice: as cloned (no
``edits.jsonl``: one ``lstat`` more per run than before edits existed) and with every run edited three
times (tags added and removed, a note, a rename: each file read, parsed and validated once). One edit
(``StoredRun.tags.add``: ``flock``, one ``O_APPEND`` write, ``fsync``, then the run re-read) is timed
in this process.

``--before DIR`` also lists the unedited store with another copy of the package (a folder holding
``runtel/``, e.g. an export of ``main``): the cost of looking for ``edits.jsonl`` at all.

    python bench/bench_edits.py [--runs 10000] [--trials 3] [--edits 200] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import log, machine_table, md_table
from bench_runs import clone_runs, template_run, timed

CASES = {
    "Store.runs()": "t = clock(); runs = Store(BASE).runs(); out(len(runs), t)",
    "runtel ls --json": "t = clock(); quiet(['ls', '--base-dir', BASE, '--json']); out(0, t)",
    "runtel ls (table)": "t = clock(); quiet(['ls', '--base-dir', BASE]); out(0, t)",
}


def edit_every_run(base: Path) -> None:
    """Three edits per run, the bytes the API writes (written directly: the API would fsync 30,000 times)."""
    from runtel.store._events import to_line
    from runtel.store.edits import EDITS, make_edit

    edits = [
        make_edit(add=["baseline", "lr3e-4"], remove=["draft"]),
        make_edit(note="lr sweep, seed 3: kept for the paper"),
        make_edit(name="renamed"),
    ]
    text = "".join(to_line(edit) + "\n" for edit in edits)
    for folder in base.iterdir():
        (folder / EDITS).write_text(text, encoding="utf-8")


def one_edit_us(base: Path, count: int) -> tuple[float, float]:
    """Median and 90th percentile microseconds of ``run.tags.add`` on one run (fsync included)."""
    from runtel import Store

    run = Store(base).runs()[0]
    times = []
    for n in range(count):
        started = time.perf_counter()
        run.tags.add(f"t{n}")
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--before", default=None, help="folder holding the runtel package to compare with")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="runtel-bench-edits-") as scratch:
        root = Path(scratch)
        template = template_run(root / "template")
        base = root / "many"
        clone_runs(template, base, args.runs)
        env = {**os.environ, "RUNTEL_SYSTEM_INTERVAL": "0"}
        trees = {
            "no edits": os.environ.get("PYTHONPATH", ""),
            "3 edits per run": os.environ.get("PYTHONPATH", ""),
        }
        if args.before:
            trees = {"before (main)": args.before, **trees}
        constants = f"BASE = {str(base)!r}\n"
        results: dict[str, dict[str, str]] = {}
        for label, tree in trees.items():
            if label == "3 edits per run":
                edit_every_run(base)
            for case, code in CASES.items():
                value = timed(constants + code, {**env, "PYTHONPATH": tree}, args.trials)
                results.setdefault(case, {})[label] = value
                log(f"{label:15} {case}: {value}")
        median, p90 = one_edit_us(base, args.edits)

    print(machine_table())
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\n{args.runs:,} runs; medians of {args.trials} fresh processes, wall time (CPU time of the "
        f"process); load average at the end {load}\n"
    )
    labels = list(trees)
    print(
        md_table(["case", *labels], [[case, *(results[case][label] for label in labels)] for case in CASES])
    )
    print(
        f"\none edit (run.tags.add, fsync included), {args.edits} edits: "
        f"median {median:.0f} us, p90 {p90:.0f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
