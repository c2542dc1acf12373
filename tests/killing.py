"""Killing a real process with SIGKILL while it logs as fast as it can, and checking what it left.

The child logs ``m<j> = step + j / 16`` (exact in float64) for steps 0, 1, 2, ... with implicit
steps, so every stored point can be checked against what was logged: each series must hold
exactly steps 0..k-1 with their values, nothing wrong, nothing twice, no gap.
Used by ``tests/test_faults_kill.py`` and ``bench/bench_kills.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtel

#: Seconds of logging a kill -9 may lose, as documented in docs/user-guide.md (flush_interval 1 s).
LOSS_BOUND_S = 1.5

_CHILD = """
import sys
import runtel
metrics = int(sys.argv[2])
run = runtel.init(project="kills", name="victim", base_dir=sys.argv[1], system_interval=0)
names = [f"m{j}" for j in range(metrics)]
offsets = [j / 16 for j in range(metrics)]
print(run.id, flush=True)
log = run.log
step = 0
while True:
    log(dict(zip(names, [step + o for o in offsets])))
    step += 1
"""


@dataclass(frozen=True)
class Kill:
    """What one kill left: points stored, seconds of logging lost, and what was wrong (None: nothing)."""

    metrics: int
    points: int
    seconds_lost: float
    problem: str | None


def kill_once(base: Path, metrics: int, after: float) -> Kill:
    """Start a logging child, SIGKILL it ``after`` seconds into its loop, read its run back."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(base), str(metrics)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    started = time.time()
    time.sleep(after)
    killed_at = time.time()
    child.kill()
    child.wait()
    child.stdout.close()
    if not run_id:
        return Kill(metrics, 0, 0.0, "the child died before its run started")
    return check(base, run_id, metrics, started, killed_at)


def check(base: Path, run_id: str, metrics: int, started: float, killed_at: float) -> Kill:
    """Read the killed run back and compare every point with what the child logged."""
    try:
        stored = runtel.Store(base).run(run_id)
        status = stored.status
        histories = {name: stored.history(name) for name in stored.metrics()}
    except Exception as exc:  # a corrupted run: reported, not raised, so the bench can count it
        return Kill(metrics, 0, killed_at - started, f"unreadable: {type(exc).__name__}: {exc}")
    problems = [] if status == "crashed" else [f"status {status!r}, expected 'crashed'"]
    unexpected = set(histories) - {f"m{j}" for j in range(metrics)}
    if unexpected:
        problems.append(f"series nobody logged: {sorted(unexpected)}")
    points, last = 0, started
    for j in range(metrics):
        steps, times, values = histories.get(f"m{j}", (np.empty(0, np.int64),) * 3)
        points += len(steps)
        if not np.array_equal(steps, np.arange(len(steps))):
            problems.append(f"m{j}: steps are not 0..{len(steps) - 1} (a gap, a duplicate or disorder)")
        elif not np.array_equal(values, steps + j / 16):
            problems.append(f"m{j}: a stored value differs from the value logged at its step")
        if len(times):
            last = max(last, float(times[-1]))
    return Kill(metrics, points, max(0.0, killed_at - last), "; ".join(problems) or None)
