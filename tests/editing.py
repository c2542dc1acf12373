"""A run logging steadily in a child process, edited from other processes meanwhile (tests of editing)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import runtel

#: Logs two metrics a step until the flag file exists (and 1,000 steps are done), 500 more, then finishes;
#: prints the run id first and the number of steps last.
LOGGER = """
import sys, time, pathlib, runtel
base, flag = sys.argv[1], pathlib.Path(sys.argv[2])
run = runtel.init(project="mnist", name="steady", base_dir=base, tags=["draft"], heartbeat_interval=0.2)
print(run.id, flush=True)
step = 0
deadline = time.monotonic() + 60
while (not flag.exists() or step < 1000) and time.monotonic() < deadline:
    run.log({"train/loss": 1.0 / (step + 1), "val/acc": step * 1e-4})
    step += 1
    if step % 50 == 0:
        time.sleep(0.005)
for _ in range(500):
    run.log({"train/loss": 1.0 / (step + 1), "val/acc": step * 1e-4})
    step += 1
run.finish()
print(step, flush=True)
"""


@dataclass
class LoggingRun:
    child: subprocess.Popen[str]
    run_id: str
    flag: Path

    def finish(self) -> int:
        """Let the child finish; the number of steps it logged."""
        assert self.child.stdout is not None
        self.flag.touch()
        steps = int(self.child.stdout.readline())
        assert self.child.wait(timeout=60) == 0
        return steps


def start_logging(base: Path, flag: Path) -> LoggingRun:
    child = subprocess.Popen(
        [sys.executable, "-c", LOGGER, str(base), str(flag)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return LoggingRun(child, child.stdout.readline().strip(), flag)


def cli(base: Path, *args: str) -> None:
    """``runtel ARGS --base-dir BASE`` in a process of its own."""
    result = subprocess.run(
        [sys.executable, "-m", "runtel.cli", *args, "--base-dir", str(base)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def wait_for_heartbeat(store: runtel.Store, run_id: str, after: float) -> None:
    """Until the live writer has rewritten ``metadata.json`` with a heartbeat later than ``after``."""
    deadline = time.monotonic() + 20
    while store.run(run_id).metadata["heartbeat"] <= after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.run(run_id).metadata["heartbeat"] > after
