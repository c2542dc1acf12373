"""Cost of the adaptation step per metric point, on the exporter's background thread.

Each exporter's worker adapts every batch before exporting it (``runtel._adapt.Adapter``), so its cost
per point caps live export and competes with the training thread for the interpreter. Measured with
the real capabilities of W&B, TensorBoard, Neptune and MLflow, on batches of 10 metrics x 1,000 steps
(a one-second flush of a fast loop), two kinds:

- ``clean``: steps increasing, finite values exact in float32: nothing to change;
- ``fixes``: every batch goes back 200 steps (a resume), a system metric sampled twice at one step,
  NaN and infinities, values that float32 rounds.

``--baseline REV`` also times the ``_adapt.py`` of a git revision (e.g. the one before vectorising)
beside the current one, in the same process. Usage:
``python bench/bench_adapt.py [--batches 20] [--repeats 5] [--baseline REV]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from _common import machine_table, md_table

from runtel import _adapt
from runtel.exporters import mlflow, neptune, tensorboard, wandb
from runtel.exporters.base import Capabilities
from runtel.records import MetricPoints

METRICS = 10
STEPS_PER_BATCH = 1000
CAPABILITIES: dict[str, Capabilities] = {
    "wandb": wandb.CAPABILITIES,
    "tensorboard": tensorboard.CAPABILITIES,
    "neptune": neptune.CAPABILITIES,
    "mlflow": mlflow.CAPABILITIES,
}
NAMES = (*(f"train/m{k}" for k in range(METRICS - 1)), "system/cpu.utilization")


def batches(kind: str, count: int) -> list[MetricPoints]:
    """``count`` consecutive batches of one run."""
    out = []
    for b in range(count):
        first = b * STEPS_PER_BATCH
        steps = np.repeat(np.arange(first, first + STEPS_PER_BATCH, dtype=np.int64), METRICS)
        index = np.tile(np.arange(METRICS, dtype=np.int32), STEPS_PER_BATCH)
        values = (steps % 1024).astype(np.float64) / 8.0 + index  # exact in float32
        if kind == "fixes":
            steps = steps - 200  # goes back 200 steps at each batch's start
            system = index == METRICS - 1
            steps[system] = steps[system] // 2 * 2  # two samples at every other step
            values[::97] = np.nan
            values[1::101] = np.inf
            values[2::7] = 0.1 * steps[2::7]
        out.append(
            MetricPoints(
                names=NAMES,
                index=index,
                steps=steps,
                times=1.7e9 + steps * 0.01,
                values=values,
                span_ids=np.zeros(steps.size, dtype=np.uint64),
            )
        )
    return out


def time_adapter(module: ModuleType, caps: Capabilities, data: list[MetricPoints], repeats: int) -> float:
    """Median microseconds per point of adapting every batch, a fresh adapter for each repeat."""
    points = sum(len(b) for b in data)
    per_point = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            adapter = module.Adapter("bench", caps, Path(scratch))
            started = time.perf_counter_ns()
            for batch in data:
                adapter.adapt([batch])
            per_point.append((time.perf_counter_ns() - started) / 1e3 / points)
    return statistics.median(per_point)


def load_baseline(revision: str) -> ModuleType:
    """``sdk/_adapt.py`` as it was at ``revision``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:sdk/_adapt.py"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader("runtel._adapt_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:sdk/_adapt.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="a git revision whose _adapt.py is timed beside the current one")
    args = parser.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    rows: list[list[Any]] = []
    for kind in ("clean", "fixes"):
        data = batches(kind, args.batches)
        for backend, caps in CAPABILITIES.items():
            now = time_adapter(_adapt, caps, data, args.repeats)
            row: list[Any] = [backend, kind, f"{now:.3f}"]
            if baseline is not None:
                before = time_adapter(baseline, caps, data, args.repeats)
                row += [f"{before:.3f}", f"{before / now:.1f}x"]
            rows.append(row)
            print(" | ".join(str(c) for c in row), file=sys.stderr, flush=True)
    header = ["backend", "batch", "us/point now"]
    if baseline is not None:
        header += [f"us/point at {args.baseline}", "speed-up"]
    print(machine_table())
    print()
    print(
        f"{args.batches} batches of {METRICS} metrics x {STEPS_PER_BATCH} steps, "
        f"median of {args.repeats} runs\n"
    )
    print(md_table(header, rows))


if __name__ == "__main__":
    main()
