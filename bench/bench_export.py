"""What exporting costs: run.log with backends attached, with system sampling on, and `runtel export`
throughput per backend.

Prints Markdown tables (paste into docs/benchmarks.md). The claims under test: live export adds no
work to the training thread (exporters work on background threads), and system sampling costs the
loop nothing measurable. The live case paces a loop as a GPU-bound training step would (each step
waits ``--step-ms`` with the GIL released, then logs 10 metrics) for ``--live-seconds``, several flush
intervals, so every backend is draining while the timed loop runs; it says how much of the run each
backend had received when the loop ended. The sampling case runs long enough for the sampler to fire
several times during the timed loop, and says how often it did.
Run: ``python bench/bench_export.py [--live-seconds 6] [--step-ms 2] [--system-steps 600000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Trial:
    us_per_call: float
    finish_s: float
    system_samples: int  # system samples taken while the loop ran


def timed_run(root: Path, steps: int, metrics: list[str] = METRICS, **init: Any) -> Trial:
    """One run of ``steps`` run.log calls (rows prebuilt, reused), then finish()."""
    run = runtel.init(project="bench", base_dir=str(root / "runs"), **init)
    rows = [dict.fromkeys(metrics, float(step)) for step in range(1000)]
    began = time.time()
    started = time.perf_counter_ns()
    for step in range(steps):
        run.log(rows[step % 1000])
    loop_ns = time.perf_counter_ns() - started
    ended = time.time()
    finish_started = time.perf_counter()
    run.finish()
    finish = time.perf_counter() - finish_started
    stored = runtel.Store(root / "runs").run(run.id)
    samples = 0
    if "system/cpu.utilization" in stored.metrics():
        times = stored.history("system/cpu.utilization")[1]
        samples = int(((times >= began) & (times <= ended)).sum())
    return Trial(loop_ns / 1e3 / steps, finish, samples)


Case = tuple[str, Callable[[Path], dict[str, Any]]]


@dataclass
class LiveTrial:
    us_per_call: float
    steps: int
    flushes: float  # flush intervals the timed loop spanned
    delivered_at_loop_end: dict[str, float]  # exporter -> share of the run's points it held by then
    finish_s: float


def paced_run(root: Path, seconds: float, step_ms: float, **init: Any) -> LiveTrial:
    """A loop of GPU-bound steps: wait ``step_ms`` (GIL released) then log 10 metrics, for ``seconds``."""
    run = runtel.init(project="bench", base_dir=str(root / "runs"), **init)
    rows = [dict.fromkeys(METRICS, float(step)) for step in range(1000)]
    period = step_ms / 1e3
    logging_ns = 0
    steps = 0
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        time.sleep(max(0.0, started + steps * period - now))
        before = time.perf_counter_ns()
        run.log(rows[steps % 1000])
        logging_ns += time.perf_counter_ns() - before
        steps += 1
    loop_s = time.perf_counter() - started
    total = steps * len(METRICS)
    delivered = {
        str(item["name"]): item["points_delivered"] / total
        for item in run._dispatcher.health()  # what each backend held when the loop ended
    }
    finish_started = time.perf_counter()
    run.finish()
    finish = time.perf_counter() - finish_started
    return LiveTrial(
        logging_ns / 1e3 / steps, steps, loop_s / run._settings.flush_interval, delivered, finish
    )


def live_overhead(seconds: float, step_ms: float, repeats: int) -> str:
    cases: list[Case] = [
        ("local store only", lambda root: {"system_interval": 0}),
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
    trials: dict[str, list[LiveTrial]] = {label: [] for label, _ in cases}
    for _ in range(repeats):
        for label, settings in cases:
            with tempfile.TemporaryDirectory() as tmp:
                trial = paced_run(Path(tmp), seconds, step_ms, **settings(Path(tmp)))
            trials[label].append(trial)
            shares = ", ".join(f"{name} {share:.0%}" for name, share in trial.delivered_at_loop_end.items())
            log(
                f"{label}: {trial.us_per_call:.2f} us/call over {trial.steps} steps "
                f"({trial.flushes:.1f} flush intervals); delivered by loop end: {shares or '-'}; "
                f"finish {trial.finish_s:.2f} s"
            )
    base = statistics.median(t.us_per_call for t in trials[cases[0][0]])
    rows = []
    for label, _ in cases:
        call = statistics.median(t.us_per_call for t in trials[label])
        finish = statistics.median(t.finish_s for t in trials[label])
        names = sorted({name for t in trials[label] for name in t.delivered_at_loop_end})
        shares = ", ".join(
            f"{name} {statistics.median(t.delivered_at_loop_end[name] for t in trials[label]):.0%}"
            for name in names
        )
        steps = statistics.median(t.steps for t in trials[label])
        rows.append(
            [label, f"{steps:,.0f}", fmt_us(call), f"{call / base:.2f}x", shares or "-", f"{finish:.2f} s"]
        )
    header = [
        "run.log, 10 metrics a step",
        "steps",
        "us/call (median)",
        "x local only",
        "share of the run each backend held at loop end (median)",
        "finish() (median)",
    ]
    return md_table(header, rows)


def system_overhead(steps: int, repeats: int, interval: float) -> str:
    """1 metric a step (the call whose cost a sampler would show most), long enough to be sampled."""
    cases: list[Case] = [
        ("system sampling off", lambda root: {"system_interval": 0}),
        (f"system sampling every {interval:g} s", lambda root: {"system_interval": interval}),
    ]
    trials = interleaved(cases, steps, repeats, ["loss"])
    base = statistics.median(t.us_per_call for t in trials[cases[0][0]])
    rows = []
    for label, _ in cases:
        call = statistics.median(t.us_per_call for t in trials[label])
        samples = statistics.median(t.system_samples for t in trials[label])
        rows.append([label, fmt_us(call), f"{call / base:.2f}x", f"{samples:g}"])
    header = ["run.log, 1 metric a step", "us/call (median)", "x off", "samples during the loop (median)"]
    return md_table(header, rows)


def interleaved(cases: list[Case], steps: int, repeats: int, metrics: list[str]) -> dict[str, list[Trial]]:
    """Every case ``repeats`` times, cases interleaved so that a noisy moment hits them alike."""
    trials: dict[str, list[Trial]] = {label: [] for label, _ in cases}
    for _ in range(repeats):
        for label, settings in cases:
            with tempfile.TemporaryDirectory() as tmp:
                trial = timed_run(Path(tmp), steps, metrics, **settings(Path(tmp)))
            trials[label].append(trial)
            log(
                f"{label}: {trial.us_per_call:.2f} us/call, finish {trial.finish_s:.2f} s, "
                f"{trial.system_samples} system samples during the loop"
            )
    return trials


def export_throughput(points: int) -> str:
    steps = points // len(METRICS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        timed_run(root, steps, system_interval=0, name="to-export")  # rows repeat every 1,000 steps
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
    parser.add_argument("--live-seconds", type=float, default=6.0, help="length of each live-export loop")
    parser.add_argument("--step-ms", type=float, default=2.0, help="GIL-free wait per step of the live loop")
    parser.add_argument(
        "--system-steps", type=int, default=600_000, help="steps of 1 metric per sampling trial"
    )
    parser.add_argument("--system-interval", type=float, default=0.1, help="seconds between system samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--export-points", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_MODE", "offline")
    tables = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # neptune's logger prints: stdout keeps the tables
        print(machine_table(), file=tables)
        live = live_overhead(args.live_seconds, args.step_ms, args.repeats)
        shape = f"{args.live_seconds:g} s loops of {args.step_ms:g} ms steps, {args.repeats} trials"
        print(f"\n#### Live export: cost on the training loop ({shape})\n", file=tables)
        print(live, file=tables)
        system = system_overhead(args.system_steps, args.repeats, args.system_interval)
        shape = f"{args.system_steps:,} steps, {args.repeats} trials"
        print(f"\n#### System sampling: cost on the training loop ({shape})\n", file=tables)
        print(system, file=tables)
        replay = export_throughput(args.export_points)
        print(
            f"\n#### Replay: `runtel export` throughput ({args.export_points:,} points, 10 metrics)\n",
            file=tables,
        )
        print(replay, file=tables)


if __name__ == "__main__":
    main()
