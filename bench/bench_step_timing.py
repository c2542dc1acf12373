"""What StepTimer costs a training step: ``tick()`` and ``with step():`` against an empty loop.

Each trial times N iterations of an empty loop, of ``timer.tick()`` and of ``with timer.step():``
on a live run (flushing every 0.1 s, so collections happen during the loop); the cost per step is the
difference to the empty loop. Prints a Markdown table of medians.
Run: ``python bench/bench_step_timing.py [--steps 100000] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

from _common import fmt_us, log, machine_table, md_table

import runtel
from runtel.step_timing import StepTimer


def us_per_iteration(body: Callable[[], None], steps: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(steps):
        body()
    return (time.perf_counter_ns() - started) / 1e3 / steps


def trial(steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run = runtel.init(project="bench", name="timing", base_dir=tmp, flush_interval=0.1, system_interval=0)
        timer = StepTimer(run, batch_size=32)

        def scoped() -> None:
            with timer.step():
                pass

        figures = {
            "empty": us_per_iteration(lambda: None, steps),
            "tick": us_per_iteration(timer.tick, steps),
            "step": us_per_iteration(scoped, steps),
        }
        run.finish()
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    trials = []
    for _ in range(args.repeats):
        trials.append(trial(args.steps))
        log(", ".join(f"{key} {value:.2f} us" for key, value in trials[-1].items()))
    empty = statistics.median(t["empty"] for t in trials)
    rows = [
        [label, fmt_us(statistics.median(t[key] for t in trials) - empty)]
        for key, label in (("tick", "timer.tick()"), ("step", "with timer.step():"))
    ]
    print(machine_table())
    print(f"\n#### StepTimer, {args.steps:,} steps, {args.repeats} trials (empty loop subtracted)\n")
    print(md_table(["call", "us/step (median)"], rows))


if __name__ == "__main__":
    main()
