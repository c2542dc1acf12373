"""What exporting costs: run.log with backends attached, and `runtel export` throughput per backend.

Prints Markdown tables (paste into docs/benchmarks.md). The claim under test: live export adds no
measurable cost to ``run.log`` (exporters work on background threads), and system sampling adds
none either. Run: ``python bench/bench_export.py [--steps 20000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import fmt_us, log, machine_table, md_table

import runtel
from runtel.api import exporter_factory
from runtel.replay import export_run

METRICS = [f"m{k}" for k in range(10)]


def backend_options(root: Path) -> dict[str, dict[str, Any]]:
    return {
        "wandb": {"mode": "offline", "dir": str(root / "wandb")},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "artifact_location": str(root / "mlart")},
        "tensorboard": {"log_dir": str(root / "tb")},
        "neptune": {"mode": "offline", "data_directory": str(root / "neptune")},
    }


def timed_run(root: Path, steps: int, **init: Any) -> tuple[float, float]:
    """us per run.log call (10 metrics) and seconds spent in finish()."""
    run = runtel.init(project="bench", base_dir=str(root / "runs"), **init)
    rows = [dict.fromkeys(METRICS, float(step)) for step in range(steps)]
    started = time.perf_counter_ns()
    for row in rows:
        run.log(row)
    loop_ns = time.perf_counter_ns() - started
    finish_started = time.perf_counter()
    run.finish()
    return loop_ns / 1e3 / steps, time.perf_counter() - finish_started


def live_overhead(steps: int, repeats: int) -> str:
    cases: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("local store only", lambda root: {"system_interval": 0}),
        ("+ system metrics every 0.5 s", lambda root: {"system_interval": 0.5}),
        (
            "+ wandb, mlflow, tensorboard, neptune (live)",
            lambda root: {
                "system_interval": 0,
                "export_timeout": 600,
                "exporters": list(backend_options(root)),
                "exporter_options": backend_options(root),
            },
        ),
    ]
    calls: dict[str, list[float]] = {label: [] for label, _ in cases}
    finishes: dict[str, list[float]] = {label: [] for label, _ in cases}
    for _ in range(repeats):  # cases interleaved, so a noisy moment hits them alike
        for label, settings in cases:
            with tempfile.TemporaryDirectory() as tmp:
                per_call, finish = timed_run(Path(tmp), steps, **settings(Path(tmp)))
            calls[label].append(per_call)
            finishes[label].append(finish)
            log(f"{label}: {per_call:.2f} us/call, finish {finish:.2f} s")
    base = statistics.median(calls[cases[0][0]])
    rows = [
        [
            label,
            fmt_us(statistics.median(calls[label])),
            f"{statistics.median(calls[label]) / base:.2f}x",
            f"{statistics.median(finishes[label]):.2f} s",
        ]
        for label, _ in cases
    ]
    header = ["run.log, 10 metrics a step", "us/call (median)", "x local only", "finish() (median)"]
    return md_table(header, rows)


def export_throughput(points: int) -> str:
    steps = points // len(METRICS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed_run(root, steps, system_interval=0, name="to-export")
        stored = runtel.Store(root / "runs").run("to-export")
        for name, options in backend_options(root).items():
            exporter = exporter_factory(name)(**options)
            result = export_run(stored, exporter)
            rate = result["points"] / result["seconds"]
            rows.append([name, f"{result['points']:,}", f"{result['seconds']:.2f} s", f"{rate:,.0f}"])
            log(f"export to {name}: {rate:,.0f} points/s")
    return md_table(["runtel export --to", "points", "time", "points/s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000, help="steps of 10 metrics per live-export trial")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--export-points", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_MODE", "offline")
    print(machine_table())
    print(f"\n#### Live export: cost on the training loop ({args.steps:,} steps, {args.repeats} trials)\n")
    print(live_overhead(args.steps, args.repeats))
    print(f"\n#### Replay: `runtel export` throughput ({args.export_points:,} points, 10 metrics)\n")
    print(export_throughput(args.export_points))


if __name__ == "__main__":
    main()
