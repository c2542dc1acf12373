"""What importing costs: `runtel import` throughput per source, beside `runtel export` of the same run.

Each source run (10 metrics x ``--steps`` steps) is written by the source's own library (tensorboardX,
mlflow on SQLite, wandb offline, neptune offline), imported ``--repeats`` times (``force``, so each
repeat reads and writes everything), then the imported run is exported back to that backend once.
Prints a Markdown table (paste into docs/benchmarks.md, section "Import").
Run: ``python bench/bench_import.py [--steps 10000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import log, machine_table, md_table

import runtel
from runtel.api import exporter_factory
from runtel.importers import import_source
from runtel.replay import export_run

METRICS = 10

_WRITERS = {
    "tensorboard": """
import tensorboardX, sys
writer = tensorboardX.SummaryWriter(sys.argv[1] + "/tb/run")
for step in range({steps}):
    for k in range({metrics}):
        writer.add_scalar(f"m{{k}}", step * 0.001 + k, step)
writer.close()
""",
    "mlflow": """
import sys, time
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{{sys.argv[1]}}/mlflow.db")
experiment = client.create_experiment("bench", artifact_location=sys.argv[1] + "/mlart")
run = client.create_run(experiment, run_name="bench")
now = int(time.time() * 1000)
points = [
    Metric(f"m{{k}}", step * 0.001 + k, now + step, step) for step in range({steps}) for k in range({metrics})
]
for start in range(0, len(points), 1000):
    client.log_batch(run.info.run_id, metrics=points[start : start + 1000])
client.set_terminated(run.info.run_id)
""",
    "wandb": """
import sys, wandb
run = wandb.init(project="bench", mode="offline", dir=sys.argv[1])
for step in range({steps}):
    run.log({{f"m{{k}}": step * 0.001 + k for k in range({metrics})}}, step=step)
run.finish()
""",
    "neptune": """
import os, sys, neptune
os.chdir(sys.argv[1])
run = neptune.init_run(mode="offline")
for step in range({steps}):
    for k in range({metrics}):
        run[f"m{{k}}"].append(step * 0.001 + k, step=step)
run.stop()
""",
}


def source_args(source: str, root: Path) -> tuple[str | None, dict[str, Any]]:
    if source == "tensorboard":
        return str(root / "tb"), {}
    if source == "mlflow":
        return None, {"tracking_uri": f"sqlite:///{root}/mlflow.db"}
    if source == "wandb":
        return str(root / "wandb"), {}
    return str(root / ".neptune"), {}


def export_options(source: str, root: Path) -> dict[str, Any]:
    return {
        "tensorboard": {"log_dir": str(root / "tb-out")},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/out.db", "artifact_location": str(root / "outart")},
        "wandb": {"mode": "offline", "dir": str(root / "wandb-out")},
        "neptune": {"mode": "offline", "data_directory": str(root / "neptune-out")},
    }[source]


def bench_source(source: str, root: Path, steps: int, repeats: int) -> list[str]:
    script = _WRITERS[source].format(steps=steps, metrics=METRICS)
    env = {**os.environ, "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", script, str(root)], check=True, capture_output=True, env=env)
    time.sleep(1.0)  # wandb-core closes its log a moment after the writer exits
    path, options = source_args(source, root)
    seconds = []
    points = 0
    for _ in range(repeats):
        started = time.perf_counter()
        outcomes = import_source(source, path, base_dir=root / "store", force=True, options=options)
        seconds.append(time.perf_counter() - started)
        points = sum(o.points or 0 for o in outcomes)
    run = runtel.Store(root / "store").runs()[0]
    exported = export_run(run, exporter_factory(source)(**export_options(source, root)))
    median = statistics.median(seconds)
    return [
        source,
        f"{points:,}",
        f"{median:.2f} s",
        f"{points / median:,.0f}",
        f"{exported['points'] / exported['seconds']:,.0f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for source in _WRITERS:
        log(f"{source}: writing {args.steps * METRICS:,} points with the source library, then importing")
        with tempfile.TemporaryDirectory(prefix=f"bench-import-{source}-") as scratch:
            rows.append(bench_source(source, Path(scratch), args.steps, args.repeats))
    print(machine_table())
    print()
    header = ["source", "points", "import (median)", "import points/s", "runtel export points/s"]
    print(md_table(header, rows))


if __name__ == "__main__":
    main()
