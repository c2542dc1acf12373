"""History reads from the shared points file (issue 17.3/17.5): a series gathered from the blocks it
shares with other series, and one that is a single range (memory-mapped, no copy).

Each case is written with ``runtel.store.writer.StoreWriter`` in blocks as a run's flushes write them
(65,536 points a block, the batch size), then read in fresh processes: ``history()`` and a sum of
its values, median of ``--trials``; the first read of a process is "cold" (page cache warm, nothing
of the run in the process), the second "repeat".

    python bench/bench_layout_reads.py [--points 10000000] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import log, machine_table, md_table

BLOCK = 65_536

READ = """
import json, sys, time
from runtel import Store
t0 = time.perf_counter()
run = Store(sys.argv[1]).run(sys.argv[2])
values = run.history("m")[2]
total = float(values.sum())
t1 = time.perf_counter()
values = run.history("m")[2]
float(values.sum())
t2 = time.perf_counter()
print(json.dumps([t1 - t0, t2 - t1, values.size, total]))
"""


def write_run(base: Path, name: str, points: int, others: int) -> str:
    """Series ``m`` with ``points`` points, logged beside ``others`` other series (same steps)."""
    from runtel.records import MetricPoints, RunEnded, RunStarted
    from runtel.store.writer import StoreWriter

    run_id = f"{abs(hash(name)) % 16**8:08x}" + "0" * 24
    writer = StoreWriter(base / f"{name}_{run_id[:8]}")
    writer.write([RunStarted(run_id, name, "bench", 1.0, {})])
    names = ("m", *(f"other{k}" for k in range(others)))
    steps_a_block = BLOCK // len(names)
    for first in range(0, points, steps_a_block):
        steps = np.arange(first, min(points, first + steps_a_block), dtype=np.int64)
        n = steps.size * len(names)
        writer.write(
            [
                MetricPoints(
                    names,
                    np.tile(np.arange(len(names), dtype=np.int32), steps.size),
                    np.repeat(steps, len(names)),
                    np.repeat(1.7e9 + steps * 1e-3, len(names)),
                    np.sin(np.arange(n) / 1e4),
                    np.zeros(n, np.uint64),
                )
            ]
        )
    writer.write([RunEnded("completed", 2.0)])
    writer.close({})
    return run_id


def timed(base: Path, run_id: str, trials: int) -> tuple[float, float, int]:
    cold, warm, size = [], [], 0
    for _ in range(trials):
        out = subprocess.run(
            [sys.executable, "-c", READ, str(base), run_id], check=True, capture_output=True, text=True
        ).stdout
        first, again, size, _ = json.loads(out.strip().splitlines()[-1])
        cold.append(first)
        warm.append(again)
    return statistics.median(cold), statistics.median(warm), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("1,000,000 points, beside 9 other series (gathered)", 1_000_000, 9, "< 50 ms"),
        (f"{args.points:,} points, alone (one range: memory-mapped)", args.points, 0, "< 0.5 s cold"),
        (f"{args.points:,} points, beside 1 other series (gathered)", args.points, 1, "< 0.5 s cold"),
    ]
    rows = []
    for label, points, others, target in cases:
        with tempfile.TemporaryDirectory(prefix="runtel-bench-reads-") as tmp:
            log(f"writing {label}...")
            run_id = write_run(Path(tmp), "reads", points, others)
            cold, warm, size = timed(Path(tmp), run_id, args.trials)
        rows.append([label, f"{size:,}", f"{cold * 1e3:.1f} ms", f"{warm * 1e3:.1f} ms", target])
        log(f"  cold {cold * 1e3:.1f} ms, repeat {warm * 1e3:.1f} ms")
    print(machine_table())
    print(
        md_table(
            ["series", "points read", "first history() + sum, fresh process", "repeat", "target"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
