"""What console capture costs per printed line, and what the reproducibility capture adds to ``init()``.

Lines: a fresh interpreter per trial prints N lines of 80 characters (``print(..., flush=True)`` and
``os.write(1, ...)``) into a pipe the benchmark drains (as a terminal or a launcher would) or into a
file (a job log: the cheapest destination, so the capture's largest relative cost); with capture,
the timed span runs from ``ConsoleCapture.start`` to ``stop`` (so the reader's draining is included),
without, it is the loop alone. ``init()``: median time of ``runtel.init`` in this git checkout with
every capture on, against all off (the capture thread's own time, git and the package scan, is
printed beside: it runs off the training thread and ``finish`` waits for it).
Run: ``python bench/bench_console.py [--lines 100000] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import fmt_us, log, machine_table, md_table

CHILD = """
import json, os, sys, time, tempfile
from pathlib import Path
from runtel._console import ConsoleCapture
lines, mode, capture = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "on"
text = "x" * 79 + "\\n"
data = text.encode()
folder = tempfile.mkdtemp()
console = ConsoleCapture(Path(folder) / "output.log", 1 << 40)
started = time.perf_counter_ns()
if capture:
    console.start()
if mode == "print":
    for _ in range(lines):
        print(text, end="", flush=True)
else:
    for _ in range(lines):
        os.write(1, data)
if capture:
    report = console.stop()
    assert report.bytes_seen == lines * 80, report
elapsed = time.perf_counter_ns() - started
os.write(2, json.dumps({"us_per_line": elapsed / 1e3 / lines}).encode())
"""

INIT = """
import json, sys, time, tempfile
import runtel
on = sys.argv[1] == "on"
times, captures = [], []
with tempfile.TemporaryDirectory() as folder:  # warm-up: the first init imports the store's modules
    runtel.init(base_dir=folder, system_interval=0, capture_environment=False, console=False).finish()
for _ in range(int(sys.argv[2])):
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run = runtel.init(base_dir=folder, system_interval=0, capture_environment=on, console=on)
        times.append(time.perf_counter() - started)
        begun = time.perf_counter()
        run.finish()
        if on:
            captures.append(json.load(open(run.dir / "environment.json"))["capture_seconds"])
print(json.dumps({"init": times, "capture": captures}))
"""


def line_trial(lines: int, mode: str, capture: bool, target: str) -> float:
    """One child's microseconds per line; its stdout a pipe drained by us, or a file."""
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(lines), mode, "on" if capture else "off"],
            stdout=subprocess.PIPE if target == "pipe" else out,
            stderr=subprocess.PIPE,
            check=True,
        )
        size = len(done.stdout) if target == "pipe" else out.seek(0, 2)
    assert size == lines * 80
    return float(json.loads(done.stderr)["us_per_line"])


def init_times(capture: bool, repeats: int) -> dict[str, list[float]]:
    done = subprocess.run(
        [sys.executable, "-c", INIT, "on" if capture else "off", str(repeats)],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for target in ("pipe", "file"):
        for mode in ("print", "os.write"):
            figures = {}
            for capture in (False, True):
                trials = [line_trial(args.lines, mode, capture, target) for _ in range(args.repeats)]
                figures[capture] = statistics.median(trials)
                log(f"{mode} to a {target}, capture={capture}: " + ", ".join(f"{t:.2f}" for t in trials))
            rows.append(
                [
                    f"`{mode}` of an 80-byte line, stdout a {target}",
                    fmt_us(figures[False]),
                    fmt_us(figures[True]),
                    fmt_us(figures[True] - figures[False]),
                    f"{figures[True] / figures[False]:.1f}x",
                ]
            )
    with tempfile.TemporaryDirectory():
        off = init_times(False, args.repeats)
        on = init_times(True, args.repeats)
    init_off, init_on = statistics.median(off["init"]), statistics.median(on["init"])
    print(machine_table())
    print(f"\n#### Console capture, {args.lines:,} lines, {args.repeats} trials (medians)\n")
    print(md_table(["write", "us/line, off", "us/line, captured", "added", "ratio"], rows))
    print(f"\n#### `runtel.init()` in a git checkout, {args.repeats} trials (medians)\n")
    captures = on["capture"]
    print(
        md_table(
            ["captures", "init()", "capture thread: first run (package scan)", "later runs (scan reused)"],
            [
                ["all off", f"{init_off * 1e3:.1f} ms", "—", "—"],
                [
                    "all on (default)",
                    f"{init_on * 1e3:.1f} ms",
                    f"{captures[0] * 1e3:.1f} ms",
                    f"{statistics.median(captures[1:]) * 1e3:.1f} ms",
                ],
                ["added to init()", f"{(init_on - init_off) * 1e3:.1f} ms", "", ""],
            ],
        )
    )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    log(f"done in {time.perf_counter() - start:.0f} s")
