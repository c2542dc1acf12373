"""``Store.aggregate`` over many runs: 200 runs x 10,000 points by default, 10 groups of 20 seeds.

Two stores: every run logging the same steps (the grid is each run's own steps, no interpolation), and
runs whose strides and ranges differ (a union grid, every run interpolated onto it). The peer is the
same statistics computed with pandas from the same series (read with ``StoredRun.history``, concatenated
into one long frame, ``groupby([lr, step]).agg``), which is what a user writes without this API; on the
misaligned store pandas computes per logged step (no interpolation), so it does less work there.
The two are timed alternately (so they share the machine's load), as wall and as CPU time of the process.

    python bench/bench_aggregate.py [--runs 200] [--points 10000] [--groups 10] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_table, md_table

import runtel


def build(base: Path, runs: int, points: int, groups: int, aligned: bool) -> None:
    """``runs`` runs, ``lr`` cycling through ``groups`` values; misaligned runs use strides 1-3 and start
    at 0-99, so their steps differ."""
    for index in range(runs):
        lr = 10.0 ** -(1 + index % groups)
        stride, start = (1, 0) if aligned else (1 + index % 3, (index * 37) % 100)
        steps = start + stride * np.arange(points)
        values = np.log1p(steps) * (1 + lr) + np.sin(index + steps / 50.0) * 0.01
        with runtel.init(
            project="bench",
            name=f"r{index}",
            base_dir=str(base),
            config={"lr": lr, "seed": index},
            system_interval=0,
        ) as run:
            for step, value in zip(steps.tolist(), values.tolist(), strict=True):
                run.log({"val/acc": value}, step=step)


def timed(work: Callable[[runtel.Store], None], store: runtel.Store) -> tuple[float, float]:
    """Wall and CPU seconds of one call of ``work(store)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work(store)
    return time.perf_counter() - wall, time.process_time() - cpu


def with_runtel(store: runtel.Store) -> None:
    assert not store.aggregate("val/acc", by=["params.lr"]).skipped


def with_pandas(store: runtel.Store) -> None:
    import pandas

    frames = []
    for run in store.runs():
        steps, _, values = run.history("val/acc")
        frames.append(pandas.DataFrame({"lr": run.params()["lr"], "step": steps, "value": values}))
    frame = pandas.concat(frames, ignore_index=True)
    frame.groupby(["lr", "step"])["value"].agg(["mean", "std", "min", "max", "count"])


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="runtel-aggregate-") as tmp:
        for aligned in (True, False):
            base = Path(tmp) / ("aligned" if aligned else "misaligned")
            log(f"building {args.runs} runs x {args.points:,} points ({base.name})")
            build(base, args.runs, args.points, args.groups, aligned)
            store = runtel.Store(base)
            grid = sum(group.step.size for group in store.aggregate("val/acc", by=["params.lr"]).groups)
            with_pandas(store)  # untimed: imports pandas, as the aggregate above warmed runtel's reads
            ours, peer = [], []
            for _ in range(args.repeat):
                ours.append(timed(with_runtel, store))
                peer.append(timed(with_pandas, store))
            ours_wall, ours_cpu = (statistics.median(t[i] for t in ours) for i in (0, 1))
            peer_wall, peer_cpu = (statistics.median(t[i] for t in peer) for i in (0, 1))
            rows.append(
                [
                    "same steps" if aligned else "different strides and ranges",
                    f"{args.runs} x {args.points:,}",
                    f"{grid:,}",
                    f"{ours_wall * 1e3:.0f} ({ours_cpu * 1e3:.0f})",
                    f"{peer_wall * 1e3:.0f} ({peer_cpu * 1e3:.0f})",
                    f"{peer_cpu / ours_cpu:.1f}x",
                ]
            )
            log(f"{base.name}: runtel {ours_wall * 1e3:.0f} ms, pandas {peer_wall * 1e3:.0f} ms")
    header = [
        "store",
        "runs x points",
        "grid steps (all groups)",
        "Store.aggregate, ms (CPU)",
        "pandas groupby, ms (CPU)",
        "pandas / runtel (CPU)",
    ]
    print(md_table(header, rows))
    print()
    print(machine_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
