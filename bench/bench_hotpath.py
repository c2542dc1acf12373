"""runtel's hot path where training runs: sustained loops with the flush running, beside short loops,
and peak memory against run length. Every trial is a fresh process.

- short: a loop that ends before the first background flush (10,000 calls).
- sustained: a loop many flush intervals long, the flush and the store's writer running during it
  (1 metric a step: 3,000,000 calls; 10 metrics: 1,000,000 calls).
- both with the implicit step (``run.log(d)``) and an explicit one (``run.log(d, step=s)``).
- memory: peak RSS (``VmHWM``, else ``resource.getrusage``) of a 100,000-point and a 10,000,000-point run,
  10 metrics a step, ``finish()`` included, taken before the points are read back to check them.

Usage: ``python bench/bench_hotpath.py [--repeats 5] [--quick]``; ``bench_log.py`` runs it too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass, field

from _common import fmt_us, log, md_table

#: Target of issue 17.1: sustained at most this many times the short loop.
TARGET_SUSTAINED_RATIO = 1.3
#: Target of issue 17.5: the long run's peak RSS at most this many MiB above the short run's.
TARGET_MEMORY_MIB = 30.0

_CHILD = r"""
import gc, json, random, resource, sys, tempfile, threading, time
import runtel
metrics, calls, explicit = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "explicit"
rnd = random.Random(7)
names = [f"m{j}" for j in range(metrics)]
rows = [{n: rnd.random() for n in names} for _ in range(1024)]
def peak_rss_mib():
    # Linux keeps ru_maxrss across exec (a child starts at its parent's peak): VmHWM is this image's own.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.TemporaryDirectory(prefix="runtel-bench-hot-") as tmp:
    run = runtel.init(project="bench", name="hot", base_dir=tmp, system_interval=0)
    log = run.log
    for s in range(100):
        log(rows[s & 1023])
    # The one-off capture of git state and packages at start (its own thread) is set-up, like init.
    for thread in threading.enumerate():
        if thread.name == "runtel-repro":
            thread.join()
    gc.collect()
    c0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    if explicit:
        for s in range(100, 100 + calls):
            log(rows[s & 1023], step=s)
    else:
        for s in range(100, 100 + calls):
            log(rows[s & 1023])
    t1 = time.perf_counter_ns()
    c1 = time.process_time_ns()
    run.finish()
    t2 = time.perf_counter_ns()
    rss = peak_rss_mib()  # before the read-back below
    stored = runtel.Store(tmp).run(run.id)
    missing = sum(100 + calls - len(stored.history(n)[0]) for n in names)
result = {"ns": t1 - t0, "cpu_ns": c1 - c0, "finish": (t2 - t1) / 1e9, "missing": missing, "rss_mib": rss}
print(json.dumps(result))
"""


@dataclass
class Case:
    """One shape: metrics a step, calls, implicit or explicit step, and its trials."""

    metrics: int
    calls: int
    step: str
    kind: str
    us_call: list[float] = field(default_factory=list)
    cpu_us_call: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    missing: int = 0

    @property
    def label(self) -> str:
        """How the case reads in a table."""
        return f"{self.metrics} metric{'s' * (self.metrics > 1)} a step, {self.step} step"

    def median_call(self) -> float:
        """Median microseconds per call."""
        return statistics.median(self.us_call)

    def median_cpu(self) -> float:
        """Median CPU microseconds per call, every thread of the process (the flush and writer too)."""
        return statistics.median(self.cpu_us_call)


def trial(case: Case) -> None:
    """One fresh process running the case once."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(case.metrics), str(case.calls), case.step],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{case.kind} {case.label}: the child failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    case.us_call.append(result["ns"] / 1e3 / case.calls)
    case.cpu_us_call.append(result["cpu_ns"] / 1e3 / case.calls)
    case.rss_mib.append(result["rss_mib"])
    case.finish_s.append(result["finish"])
    case.missing += int(result["missing"])
    log(
        f"  {case.kind} {case.label}, {case.calls:,} calls: {case.us_call[-1]:.3f} us/call, "
        f"CPU {case.cpu_us_call[-1]:.3f} us/call (all threads), RSS {result['rss_mib']:.0f} MiB, "
        f"finish {result['finish']:.2f} s"
    )


@dataclass
class HotReport:
    """Every case of one run."""

    cases: list[Case]
    memory: list[Case]
    repeats: int

    def get(self, kind: str, metrics: int, step: str) -> Case:
        """The case of that shape."""
        return next(c for c in self.cases if (c.kind, c.metrics, c.step) == (kind, metrics, step))


def run_all(repeats: int, quick: bool = False) -> HotReport:
    """Measure every case, interleaved trial by trial so machine noise spreads evenly."""
    long = {1: 600_000 if quick else 3_000_000, 10: 200_000 if quick else 1_000_000}
    cases = [
        Case(metrics, calls, step, kind)
        for metrics in (1, 10)
        for step in ("implicit", "explicit")
        for kind, calls in (("short", 10_000), ("sustained", long[metrics]))
    ]
    memory = [
        Case(10, 10_000, "implicit", "memory"),
        Case(10, 100_000 if quick else 1_000_000, "implicit", "memory"),
    ]
    for _ in range(repeats):
        for case in [*cases, *memory]:
            trial(case)
    return HotReport(cases, memory, repeats)


def hot_tables(rep: HotReport, fastest_peer: dict[int, tuple[str, float]] | None = None) -> str:
    """Markdown: sustained (the headline) beside short, then memory.

    ``fastest_peer`` maps metrics a step to the fastest peer's (name, us/call).
    """
    rows = []
    for metrics in (1, 10):
        for step in ("implicit", "explicit"):
            short, sustained = rep.get("short", metrics, step), rep.get("sustained", metrics, step)
            ratio = sustained.median_call() / short.median_call()
            peer = (fastest_peer or {}).get(metrics)
            speedup = "-" if peer is None else f"{peer[1] / sustained.median_call():,.1f}x ({peer[0]})"
            rows.append(
                [
                    sustained.label,
                    f"**{fmt_us(sustained.median_call())}**",
                    fmt_us(sustained.median_call() / metrics),
                    f"{sustained.calls:,}",
                    fmt_us(short.median_call()),
                    f"{ratio:.2f}x" + ("" if ratio <= TARGET_SUSTAINED_RATIO else " **> 1.3x**"),
                    f"{fmt_us(sustained.median_cpu())} / {fmt_us(short.median_cpu())}",
                    speedup,
                    "all"
                    if sustained.missing + short.missing == 0
                    else f"**{sustained.missing + short.missing} missing**",
                ]
            )
    table = md_table(
        [
            "case",
            "sustained us/call",
            "sustained us/point",
            "sustained calls",
            "short-loop us/call (10,000 calls)",
            "sustained / short (<= 1.3x)",
            "CPU us/call, all threads: sustained / short",
            "fastest peer / sustained (>= 15x)",
            "read back",
        ],
        rows,
    )
    for metrics in (1, 10):
        ratios = [
            rep.get(kind, metrics, "explicit").median_call()
            / rep.get(kind, metrics, "implicit").median_call()
            for kind in ("sustained", "short")
        ]
        table += (
            f"\n\nExplicit / implicit step, {metrics} metric{'s' * (metrics > 1)} a step: "
            f"{ratios[0]:.2f}x sustained, {ratios[1]:.2f}x in the short loop."
        )
    small, big = rep.memory
    grow = statistics.median(big.rss_mib) - statistics.median(small.rss_mib)
    mem = md_table(
        ["run, 10 metrics a step", "peak RSS (median)", "finish()"],
        [
            [
                f"{c.calls * 10:,} points",
                f"{statistics.median(c.rss_mib):.0f} MiB",
                f"{statistics.median(c.finish_s):.2f} s",
            ]
            for c in rep.memory
        ],
    )
    mem += (
        f"\n\nGrowth from {small.calls * 10:,} to {big.calls * 10:,} points: {grow:.0f} MiB "
        f"({'within' if grow <= TARGET_MEMORY_MIB else '**over**'} the {TARGET_MEMORY_MIB:.0f} MiB target)."
    )
    return table + "\n\n" + mem


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="shorter sustained loops, for development")
    args = ap.parse_args(argv)
    print(hot_tables(run_all(args.repeats, args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
