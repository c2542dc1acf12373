"""kill -9 at random points while logging as fast as possible: seconds lost, corrupted runs, wrong points.

Each kill starts a fresh child that logs 1 or 10 metrics a step (alternately) with implicit steps and
values ``step + j / 16``, SIGKILLs it after a random 0.3-4 s of logging, reads its run back and
checks every point against what was logged (``tests/killing.py``). Seconds lost = the kill's time
minus the time of the newest stored point. Usage: ``python bench/bench_kills.py [--kills 50]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.killing

from _common import log, machine_table, md_table

from tests.killing import LOSS_BOUND_S, Kill, kill_once


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile by the nearest-rank rule."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    chance = random.Random(args.seed)
    kills: list[Kill] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runtel-kills-") as tmp:
        for i in range(args.kills):
            kill = kill_once(Path(tmp), 10 if i % 2 else 1, chance.uniform(0.3, 4.0))
            log(f"kill {i + 1}: {kill}")
            kills.append(kill)
    lost = [k.seconds_lost for k in kills]
    rows = [
        ["kills", f"{len(kills)}"],
        ["seconds lost, median", f"{statistics.median(lost):.3f}"],
        ["seconds lost, p95", f"{percentile(lost, 0.95):.3f}"],
        ["seconds lost, max", f"{max(lost):.3f}"],
        [f"kills losing more than the bound ({LOSS_BOUND_S} s)", f"{sum(x > LOSS_BOUND_S for x in lost)}"],
        [
            "corrupted or unreadable runs",
            f"{sum(1 for k in kills if k.problem and 'unreadable' in k.problem)}",
        ],
        [
            "runs with a wrong, missing-in-the-middle or duplicated point",
            f"{sum(1 for k in kills if k.problem)}",
        ],
        ["points stored and checked", f"{sum(k.points for k in kills):,}"],
    ]
    print("\n".join([machine_table(), "", md_table(["kill -9 while logging", "measured"], rows), ""]))
    print(
        f"- {len(kills)} kills in {time.perf_counter() - began:.0f} s; problems: "
        f"{[k.problem for k in kills if k.problem] or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
