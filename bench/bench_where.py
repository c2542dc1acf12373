"""The filter language and DataFrames over many runs: ``runtel ls --where/--sort``, ``Store.runs(where=)``,
``Store.frame()``, against plain ``runtel ls`` and ``Store.runs()`` in the same run.

A store of N runs cloned from one real run (its series files hard-linked), each with its own
``metadata.json`` (tags), ``hyperparameters.json`` (nested, varied) and ``summary.json`` (varied
metric statistics), so the filter reads what a real store holds. Every figure is the median over
fresh processes, timed after the imports (a cold process: nothing cached in memory; the page cache is
warm). The in-process second call shows what the UI pays on a refresh (the documents cached).

    python bench/bench_where.py [--runs 10000] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import dist_version, log, machine_table, md_table
from bench_runs import clone_runs, template_run, timed_seconds

TARGET_S = 1.0
WHERE = "params.optimizer.lr < 1e-3 and metrics['val/acc'].max > 0.9 and 'baseline' in tags"
#: Every run's params read, and the summary of each run the first condition keeps: the costlier case.
WIDE = "params.optimizer.lr < 1e-3 and metrics['val/acc'].max > 0.9"
SORT = "metrics['val/acc'].max"

#: Timed in a fresh interpreter; prints one JSON list ``[wall, cpu]`` of seconds.
CASES = {
    "Store.runs()": "t = clock(); Store(BASE).runs(); out(t)",
    "Store.runs(where=...)": "t = clock(); Store(BASE).runs(where=WHERE); out(t)",
    "Store.runs(where=...), second call in the process": (
        "Store(BASE).runs(where=WHERE); t = clock(); Store(BASE).runs(where=WHERE); out(t)"
    ),
    "runtel ls (table)": "t = clock(); quiet(['ls', '--base-dir', BASE]); out(t)",
    "runtel ls --where ... (table)": (
        "t = clock(); quiet(['ls', '--base-dir', BASE, '--where', WHERE]); out(t)"
    ),
    "runtel ls --where (params and metrics only) (table)": (
        "t = clock(); quiet(['ls', '--base-dir', BASE, '--where', WIDE]); out(t)"
    ),
    "runtel ls --where ... --json": (
        "t = clock(); quiet(['ls', '--base-dir', BASE, '--where', WHERE, '--json']); out(t)"
    ),
    "runtel ls --sort metrics['val/acc'].max --desc": (
        "t = clock(); quiet(['ls', '--base-dir', BASE, '--sort', SORT, '--desc']); out(t)"
    ),
    "Store.frame() (pandas)": "import pandas; t = clock(); Store(BASE).frame(); out(t)",
    "Store.frame(where=...) (pandas)": "import pandas; t = clock(); Store(BASE).frame(where=WHERE); out(t)",
    "Store.frame(backend='polars')": (
        "import polars; t = clock(); Store(BASE).frame(backend='polars'); out(t)"
    ),
}
PRELUDE = """
import contextlib, json, time
from runtel import Store
from runtel.cli import main
def clock():
    return time.perf_counter(), time.process_time()
def quiet(argv):
    with open('/dev/null', 'w') as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        assert main(argv) == 0
def out(t):
    print(json.dumps([time.perf_counter() - t[0], time.process_time() - t[1]]))
"""


def vary(folder: Path, rng: random.Random, i: int) -> None:
    """Give a cloned run its own tags, params and summary statistics (replacing the hard links)."""
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["tags"] = [tag for tag, every in (("baseline", 3), ("sweep", 2)) if i % every == 0]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    params = {
        "optimizer": {"name": rng.choice(("adam", "sgd")), "lr": rng.choice((1e-4, 3e-4, 1e-3, 1e-2))},
        "model": {"depth": rng.choice((18, 34, 50)), "width": rng.choice((64, 128))},
        "seed": i % 5,
        "batch_size": rng.choice((32, 64, 128)),
    }
    (folder / "hyperparameters.json").unlink()
    (folder / "hyperparameters.json").write_text(json.dumps(params))
    summary = json.loads((folder / "summary.json").read_text())
    acc = rng.uniform(0.5, 1.0)
    summary["metrics"]["acc"].update(min=acc / 2, max=acc, last=acc)
    summary["metrics"]["val/acc"] = {**summary["metrics"]["acc"]}
    (folder / "summary.json").unlink()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(14)
    with tempfile.TemporaryDirectory(prefix="runtel-bench-where-") as scratch:
        root = Path(scratch)
        template = template_run(root / "template")
        base = root / "many"
        for i, (_, folder) in enumerate(clone_runs(template, base, args.runs)):
            vary(folder, rng, i)
        constants = f"BASE = {str(base)!r}\nWHERE = {WHERE!r}\nWIDE = {WIDE!r}\nSORT = {SORT!r}\n"
        env = {**os.environ, "RUNTEL_SYSTEM_INTERVAL": "0"}
        count = subprocess.run(
            [sys.executable, "-c", PRELUDE + constants + "print(len(Store(BASE).runs(where=WHERE)))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        rows = []
        for case, code in CASES.items():
            wall, cpu = timed_seconds(constants + code, env, args.trials, PRELUDE)
            log(f"{case}: {wall:.3f} s ({cpu:.3f} s CPU)")
            timed_target = ("where" in case or "frame" in case) and "second" not in case
            target = f"< {TARGET_S} s" if timed_target else ""
            rows.append([case, f"{wall:.3f} s", f"{cpu:.3f} s", target])
    print(machine_table())
    print(f"\npandas {dist_version('pandas')}, polars {dist_version('polars')}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\n{args.runs:,} runs, {count} matching `{WHERE}`; medians of {args.trials} fresh processes "
        f"(timed after the imports); load average at the end {load}\n"
    )
    print(md_table(["case", "wall", "CPU", "target"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
