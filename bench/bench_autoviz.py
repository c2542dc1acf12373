"""Does automatic visualisation cost the training loop anything? ExperimentTracker.log_metrics, on vs off;
and how long a chart of a 1,000,000-point series takes to draw.

Rendering happens in a render process fed by a background thread; the first table measures what the
loop sees, over a loop long enough (default 1,000,000 calls) that the render process's start is a
small part of it, as in training. The second
times ``MetricVisualizer.create_metric_plots`` + ``savefig`` and ``ExperimentTracker.finish()`` on a
million points with one spike. Prints Markdown tables.
Run: ``python bench/bench_autoviz.py [--steps 1000000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import fmt_s, fmt_us, log, machine_table, md_table

from runtel.tracking import ExperimentTracker, MetricVisualizer

MILLION = 1_000_000


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


def spiky_million() -> np.ndarray:
    """A smooth series with one spike that a naive every-n-th downsampling would lose."""
    values = np.sin(np.arange(MILLION) / 5_000.0)
    values[654_321] = 99.0
    return values


def render_million() -> float:
    """Seconds to build and save the chart of a 1,000,000-point series."""
    steps = np.arange(MILLION, dtype=np.int64)
    values = spiky_million()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        figures = MetricVisualizer.create_metric_plots({"loss": (steps, values)})
        figures["metric_loss"].savefig(Path(tmp) / "loss.png")
        return time.perf_counter() - started


def finish_million() -> float:
    """Seconds in ExperimentTracker.finish() for a 1,000,000-step run (final plots included)."""
    with tempfile.TemporaryDirectory() as tmp:
        tracker = ExperimentTracker("big", base_dir=tmp, auto_visualize_every=250_000)
        for value in spiky_million().tolist():
            tracker.log_metrics({"loss": value})
        started = time.perf_counter()
        tracker.finish()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1_000_000)
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

    renders = [render_million() for _ in range(args.repeats)]
    finishes = [finish_million() for _ in range(min(args.repeats, 3))]
    print(f"\n#### A 1,000,000-point series with one spike ({args.repeats} / {len(finishes)} trials)\n")
    print(
        md_table(
            ["operation", "time (median)"],
            [
                ["MetricVisualizer.create_metric_plots + savefig", fmt_s(statistics.median(renders))],
                ["ExperimentTracker.finish() (final plots)", fmt_s(statistics.median(finishes))],
            ],
        )
    )


if __name__ == "__main__":
    main()
