"""runtel store benchmarks: write throughput, ``finish()`` time, 1M-point read, ``import runtel`` time.

Run alone with ``python bench/bench_store.py [--quick] [--points N]``; ``bench_log.py`` also runs it
(unless ``--skip-store``) so every figure comes from one run.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from _common import fmt_s, log, machine_table, md_table

#: Design targets (docs/design.md section 5).
TARGET_POINTS_PER_S = 1_000_000
TARGET_FINISH_S = 1.0
TARGET_READ_S = 0.050
TARGET_IMPORT_S = 0.300


@dataclass
class WriteResult:
    """One store write run: ``log`` loop time and ``finish()`` time for ``points`` points."""

    label: str
    points: int
    metrics: int
    log_s: float
    finish_s: float
    read_back: int | None = None

    @property
    def points_per_s(self) -> float:
        """End-to-end throughput: points / (log time + finish time)."""
        return self.points / (self.log_s + self.finish_s)


@dataclass
class StoreReport:
    """Everything bench_store measures; ``errors`` holds what could not be measured and why."""

    writes: list[WriteResult] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    read_points: int = 0
    import_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)
    importtime_top: list[tuple[str, float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def import_net_s(self) -> float | None:
        """Median ``import runtel`` time minus the median bare interpreter start."""
        if not self.import_s or not self.baseline_s:
            return None
        return statistics.median(self.import_s) - statistics.median(self.baseline_s)


def _write_run(base_dir: str, points: int, metrics: int, label: str) -> tuple[WriteResult, str]:
    """Log ``points`` points (``metrics`` per call, dicts built in the loop) then ``finish()``."""
    import runtel

    names = [f"m{j}" for j in range(metrics)]
    steps = points // metrics
    rnd = random.Random(1)
    values = [rnd.random() for _ in range(metrics)]
    run = runtel.init(project="bench", name=label, base_dir=base_dir, system_interval=0)
    gc.collect()
    if metrics == 1:
        name = names[0]
        v = values[0]
        t0 = time.perf_counter_ns()
        for i in range(steps):
            run.log({name: v + i})
        t1 = time.perf_counter_ns()
    else:
        t0 = time.perf_counter_ns()
        for i in range(steps):
            run.log({n: v + i for n, v in zip(names, values, strict=True)})
        t1 = time.perf_counter_ns()
    run.finish()
    t2 = time.perf_counter_ns()
    res = WriteResult(label, steps * metrics, metrics, (t1 - t0) / 1e9, (t2 - t1) / 1e9)
    return res, run.id


def _write_many_series(base_dir: str, points: int, series: int, per_call: int) -> WriteResult:
    """Log ``points`` points spread evenly over ``series`` distinct series, ``per_call`` a call."""
    import runtel

    names = [f"layer{j // 100}/unit{j % 100}" for j in range(series)]
    calls = points // per_call
    run = runtel.init(project="bench", name=f"series_{series}", base_dir=base_dir, system_interval=0)
    gc.collect()
    t0 = time.perf_counter_ns()
    for i in range(calls):
        first = (i * per_call) % series
        run.log(dict.fromkeys(names[first : first + per_call], float(i)), step=i)
    t1 = time.perf_counter_ns()
    run.finish()
    t2 = time.perf_counter_ns()
    stored = runtel.Store(base_dir).run(run.id)
    back = sum(stored.history(name)[0].size for name in stored.metrics())
    return WriteResult(f"{series:,} series", calls * per_call, series, (t1 - t0) / 1e9, (t2 - t1) / 1e9, back)


def measure_many_series(
    points: int, counts: tuple[int, ...] = (10, 1_000, 10_000), repeats: int = 3
) -> list[WriteResult]:
    """Median (by ``finish()``) of ``repeats`` runs of ``points`` points over each number of series."""
    results = []
    for series in counts:
        trials = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="runtel-bench-series-") as tmp:
                trials.append(_write_many_series(tmp, points, series, per_call=min(series, 100)))
        trials.sort(key=lambda w: w.finish_s)
        best = trials[len(trials) // 2]
        log(f"  {series:,} series: log {best.log_s:.2f} s, finish {best.finish_s:.2f} s")
        results.append(best)
    return results


VERIFY_CODE = """
import sys, time
from pathlib import Path
from runtel.store._metrics import verify_folder
metrics = Path(sys.argv[1])
t0 = time.perf_counter()
check = verify_folder(metrics)["loss"]
print(time.perf_counter() - t0, check.status, check.records)
"""


def measure_verify(points: int = 10_000_000, repeats: int = 5) -> tuple[list[float], str]:
    """CRC check of one ``points``-point series in fresh processes (file in the page cache): seconds."""
    import numpy as np

    from runtel.records import MetricPoints
    from runtel.store.writer import StoreWriter

    seconds = []
    with tempfile.TemporaryDirectory(prefix="runtel-bench-verify-") as tmp:
        writer = StoreWriter(f"{tmp}/verify_00000000")
        block = 1_000_000  # as a run flushing 1,000,000 points a second writes it
        for start in range(0, points, block):
            n = min(block, points - start)
            steps = np.arange(start, start + n, dtype=np.int64)
            zeros = np.zeros(n, np.int32)
            writer.write(
                [MetricPoints(("loss",), zeros, steps, steps * 1.0, steps * 0.5, zeros.astype(np.uint64))]
            )
        writer.close({})
        status = ""
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", VERIFY_CODE, f"{tmp}/verify_00000000/metrics"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            seconds.append(float(out[0]))
            status = f"{out[1]}, {int(out[2]):,} records"
    return seconds, status


def many_series_table(results: list[WriteResult]) -> str:
    """Markdown: finish() and durable throughput against the issue 17.3 targets."""
    rows = [
        [
            f"{w.points:,} points over {w.metrics:,} series",
            fmt_s(w.log_s),
            fmt_s(w.finish_s),
            f"{w.points_per_s / 1e6:.2f} M",
            f"{_ok(w.finish_s < TARGET_FINISH_S)} / {_ok(w.points_per_s >= TARGET_POINTS_PER_S)}",
            "all" if w.read_back == w.points else f"**{w.read_back:,} of {w.points:,}**",
        ]
        for w in results
    ]
    headers = ["run", "log loop", "finish()", "points/s durable", "finish < 1 s / >= 1 M/s", "read back"]
    return md_table(headers, rows)


def measure_store(points: int, read_repeats: int = 5) -> StoreReport:
    """Write ``points`` as one series and as 10 series, check they read back, time the 1-series read."""
    rep = StoreReport()
    try:
        import runtel
    except Exception as exc:  # the core API may not exist yet
        rep.errors.append(f"runtel not importable: {type(exc).__name__}: {exc}")
        return rep
    with tempfile.TemporaryDirectory(prefix="runtel-bench-store-") as tmp:
        try:
            w1, run_id = _write_run(tmp, points, 1, "store_1x")
            log(f"  store 1 metric x {points:,}: log {w1.log_s:.2f} s, finish {w1.finish_s:.2f} s")
            w10, run_id10 = _write_run(tmp, points, 10, "store_10x")
            log(f"  store 10 metrics x {points // 10:,}: log {w10.log_s:.2f} s, finish {w10.finish_s:.2f} s")
            rep.writes += [w1, w10]
            store = runtel.Store(tmp)
            for _ in range(read_repeats):
                gc.collect()
                t0 = time.perf_counter_ns()
                steps, _times, _values = store.run(run_id).history("m0")
                rep.read_s.append((time.perf_counter_ns() - t0) / 1e9)
            rep.read_points = len(steps)
            w1.read_back = len(steps)
            w10.read_back = sum(len(store.run(run_id10).history(f"m{j}")[0]) for j in range(10))
        except Exception as exc:
            rep.errors.append(f"store benchmark failed: {type(exc).__name__}: {exc}")
    return rep


def _subprocess_s(code: str, extra: tuple[str, ...] = ()) -> float:
    """Wall time of ``python [extra] -c code`` in a fresh interpreter."""
    t0 = time.perf_counter_ns()
    subprocess.run([sys.executable, *extra, "-c", code], check=True, capture_output=True)
    return (time.perf_counter_ns() - t0) / 1e9


def parse_importtime(stderr: str, top: int = 10) -> list[tuple[str, float, float]]:
    """Biggest modules in ``-X importtime`` output as (name, self ms, cumulative ms), by self time."""
    rows: list[tuple[str, float, float]] = []
    pat = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s(.*)$")
    for line in stderr.splitlines():
        m = pat.match(line)
        if m:
            rows.append((m.group(3).rstrip(), int(m.group(1)) / 1e3, int(m.group(2)) / 1e3))
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows[:top]


def measure_import(repeats: int = 5) -> StoreReport:
    """Median of fresh ``import runtel`` processes minus a bare ``pass``; importtime offenders if slow."""
    rep = StoreReport()
    try:
        _subprocess_s("import runtel")  # warm the file-system cache; fails if not importable
    except subprocess.CalledProcessError as exc:
        last = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        rep.errors.append(f"import runtel failed: {last[0]}")
        return rep
    _subprocess_s("pass")
    for _ in range(repeats):
        rep.baseline_s.append(_subprocess_s("pass"))
        rep.import_s.append(_subprocess_s("import runtel"))
    net = rep.import_net_s
    if net is not None and net > TARGET_IMPORT_S:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import runtel"],
            check=True,
            capture_output=True,
            text=True,
        )
        rep.importtime_top = parse_importtime(proc.stderr)
    return rep


def _ok(good: bool) -> str:
    return "yes" if good else "**no**"


def store_tables(rep: StoreReport) -> str:
    """Markdown for the store and import figures, with the design targets."""
    parts: list[str] = []
    rows: list[list[str]] = []
    for w in rep.writes:
        back = (
            "-"
            if w.read_back is None
            else ("all" if w.read_back == w.points else f"**{w.read_back:,} of {w.points:,}**")
        )
        rows.append(
            [
                f"{w.points:,} points as {w.metrics} metric{'s' if w.metrics > 1 else ''} x "
                f"{w.points // w.metrics:,} steps",
                fmt_s(w.log_s),
                fmt_s(w.finish_s),
                f"{w.points_per_s:,.0f}",
                f"{_ok(w.points_per_s >= TARGET_POINTS_PER_S)} / {_ok(w.finish_s < TARGET_FINISH_S)}",
                back,
            ]
        )
    if rows:
        parts.append(
            md_table(
                [
                    "runtel store write",
                    "log loop",
                    "finish()",
                    "points/s (end to end)",
                    ">= 1M/s / finish < 1 s",
                    "read back",
                ],
                rows,
            )
        )
    rows = []
    if rep.read_s:
        med = statistics.median(rep.read_s)
        rows.append(
            [
                f"history() of a {rep.read_points:,}-point series (median of {len(rep.read_s)})",
                fmt_s(med),
                "< 50 ms",
                _ok(med < TARGET_READ_S),
            ]
        )
    net = rep.import_net_s
    if net is not None:
        rows.append(
            [
                f"import runtel (median of {len(rep.import_s)} fresh processes "
                f"{fmt_s(statistics.median(rep.import_s))} minus bare start "
                f"{fmt_s(statistics.median(rep.baseline_s))})",
                fmt_s(net),
                "< 300 ms",
                _ok(net < TARGET_IMPORT_S),
            ]
        )
    if rows:
        parts.append(md_table(["runtel", "measured", "target", "met"], rows))
    if rep.importtime_top:
        parts.append(
            "`python -X importtime -c 'import runtel'`, biggest self times:\n\n"
            + md_table(
                ["module", "self", "cumulative"],
                [[f"`{n.strip()}`", f"{s:.1f} ms", f"{c:.1f} ms"] for n, s, c in rep.importtime_top],
            )
        )
    for err in rep.errors:
        parts.append(f"- not measured: {err}")
    return "\n\n".join(parts)


def merge(a: StoreReport, b: StoreReport) -> StoreReport:
    """Combine the store report and the import report."""
    return StoreReport(
        a.writes + b.writes,
        a.read_s + b.read_s,
        a.read_points or b.read_points,
        a.import_s + b.import_s,
        a.baseline_s + b.baseline_s,
        a.importtime_top + b.importtime_top,
        a.errors + b.errors,
    )


def run_all(points: int, repeats: int = 5) -> StoreReport:
    """Store write/read figures then import time."""
    log(f"store: {points:,} points")
    rep = measure_store(points, repeats)
    log("import time")
    return merge(rep, measure_import(repeats))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000, help="points per store run (default 1M)")
    ap.add_argument("--quick", action="store_true", help="100,000 points instead of 1M")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--many-series", action="store_true", help="only finish()/throughput at 10, 1,000 and 10,000 series"
    )
    args = ap.parse_args(argv)
    points = 100_000 if args.quick else args.points
    if args.many_series:
        print("### runtel store: many series\n")
        print(many_series_table(measure_many_series(points, repeats=args.repeats)))
        seconds, status = measure_verify(repeats=args.repeats)
        print(
            "\n`verify_folder` (what `runtel verify` runs) of a 10,000,000-point series in a fresh process "
            "(page cache warm), "
            f"median of {len(seconds)}: {fmt_s(statistics.median(seconds))} ({status}); "
            "target well under 0.5 s"
        )
        return 0
    rep = run_all(points, args.repeats)
    print("### runtel store and import\n")
    print(machine_table() + "\n")
    print(store_tables(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
