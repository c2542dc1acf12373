"""Does automatic visualisation cost the training loop anything? ExperimentTracker.log_metrics, on vs off.

Rendering happens on a background thread; this measures what the loop sees. Prints a Markdown
table. Run: ``python bench/bench_autoviz.py [--steps 20000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _common import fmt_us, log, machine_table, md_table

from runtel.tracking import ExperimentTracker


def per_call(steps: int, auto_visualize: bool) -> tuple[float, float]:
    """us per log_metrics call (3 metrics) and seconds in finish() (which waits for the last render)."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker = ExperimentTracker(
            "bench", base_dir=tmp, auto_visualize=auto_visualize, auto_visualize_every=1000
        )
        rows = [
            {"train_loss": 1.0 / (s + 1), "val_loss": 2.0 / (s + 1), "accuracy": s / steps}
            for s in range(steps)
        ]
        started = time.perf_counter_ns()
        for step, row in enumerate(rows):
            tracker.log_metrics(row, step=step)
        loop = (time.perf_counter_ns() - started) / 1e3 / steps
        finish_started = time.perf_counter()
        tracker.finish()
        return loop, time.perf_counter() - finish_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.repeats):
        for auto in (False, True):
            results[auto].append(per_call(args.steps, auto))
            log(f"auto_visualize={auto}: {results[auto][-1][0]:.2f} us/call")
    base = statistics.median(r[0] for r in results[False])
    rows = []
    for auto in (False, True):
        call = statistics.median(r[0] for r in results[auto])
        finish = statistics.median(r[1] for r in results[auto])
        label = "on, render every 1,000 calls" if auto else "off"
        rows.append([label, fmt_us(call), f"{call / base:.2f}x", f"{finish:.2f} s"])
    print(machine_table())
    print(f"\n#### ExperimentTracker.log_metrics, 3 metrics, {args.steps:,} steps, {args.repeats} trials\n")
    print(md_table(["auto_visualize", "us/call (median)", "x off", "finish() (median)"], rows))


if __name__ == "__main__":
    main()
