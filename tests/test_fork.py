"""A forked child neither hangs nor writes into its parent's run; the parent's run stays exact.

Every child runs under a deadline (the script's own ``waitpid`` loop, ``join`` timeouts, the
subprocess timeout), so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import runtel

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")

DEADLINE = 20.0


CHILD_SCRIPT = """
import os, sys, time
import runtel

run = runtel.init(project="fork", name="parent", base_dir=sys.argv[1], flush_interval=0.05)
run.log({"loss": 0.0})
run.flush()
mode = sys.argv[2]
pid = os.fork()
if pid == 0:  # the child: ends like any script, through the interpreter's exit and its atexit hooks
    if mode == "logs":
        for step in range(100):
            run.log({"loss": -1.0, "child/only": float(step)})
        run.log_params({"child": True})
        assert run.flush() is False
        try:
            run.log_artifact(__file__)
        except runtel.RunForkedError as exc:
            print("refused:", exc, flush=True)
        run.finish()
    if mode == "own":  # a run of the child's own, in its own base dir, works as in any process
        with runtel.init(project="fork", name="child", base_dir=sys.argv[1] + "-child") as own:
            own.log({"child/loss": 7.0})
    sys.exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        break
    time.sleep(0.02)
else:
    os.kill(pid, 9)
    print("child hung", flush=True)
run.log({"loss": 1.0})
"""  # the parent leaves its run to the exit hook too


def stored_parent(base_dir: Path) -> runtel.StoredRun:
    (stored,) = runtel.Store(base_dir).runs()
    return stored


def assert_exact(stored: runtel.StoredRun, steps: int) -> None:
    assert stored.status == "completed"
    assert stored.metrics() == ["loss"]
    got_steps, _, values = stored.history("loss")
    assert got_steps.tolist() == list(range(steps))
    assert values.tolist() == [float(step) for step in range(steps)]


@pytest.mark.parametrize("mode", ["exits", "logs", "own"])
def test_forked_child_exiting_normally_neither_hangs_nor_writes(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "forks.py"
    script.write_text(CHILD_SCRIPT)
    base_dir = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, str(script), str(base_dir), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "child exit 0" in result.stdout, result.stdout + result.stderr
    stored = stored_parent(base_dir)
    assert_exact(stored, 2)
    assert stored.params() == {}
    assert list(stored.dir.joinpath("versions").iterdir()) == []
    if mode == "logs":
        assert "refused: log_artifact() in a forked child" in result.stdout
        assert result.stderr.count("cannot record into it") == 1
    if mode == "own":
        (child,) = runtel.Store(tmp_path / "runs-child").runs()
        assert child.status == "completed"
        assert child.history("child/loss")[2].tolist() == [7.0]


@pytest.fixture
def parent_run(base_dir: Path) -> Iterator[runtel.Run]:
    run = runtel.init(project="fork", name="parent", base_dir=str(base_dir), flush_interval=0.05)
    yield run
    run.finish()


def assert_parent_exact(run: runtel.Run, steps: int) -> None:
    run.finish()
    assert_exact(runtel.Store(run.dir.parent).run(run.id), steps)


def _log_in_child(run: runtel.Run, result: multiprocessing.Queue[str]) -> None:
    run.log({"loss": -1.0})
    result.put("logged")


def test_multiprocessing_fork_child(parent_run: runtel.Run) -> None:
    context = multiprocessing.get_context("fork")
    result: multiprocessing.Queue[str] = context.Queue()
    parent_run.log({"loss": 0.0})
    child = context.Process(target=_log_in_child, args=(parent_run, result))
    child.start()
    child.join(DEADLINE)
    if child.is_alive():
        child.kill()
        pytest.fail("the multiprocessing child did not finish")
    assert child.exitcode == 0
    assert result.get(timeout=5) == "logged"
    parent_run.log({"loss": 1.0})
    assert_parent_exact(parent_run, 2)


class _Squares(Dataset[torch.Tensor]):
    """A dataset whose workers try to log, as code shared with the training loop might."""

    def __init__(self, run: runtel.Run) -> None:
        self.run = run

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> torch.Tensor:
        self.run.log({"loss": -1.0, "worker/item": float(index)})
        return torch.tensor([float(index) ** 2])


def test_dataloader_fork_workers_while_the_parent_logs(parent_run: runtel.Run) -> None:
    loader = DataLoader(_Squares(parent_run), batch_size=4, num_workers=2, multiprocessing_context="fork")
    seen: list[float] = []
    step = 0
    for epoch in range(2):
        for batch in loader:
            seen.extend(batch.flatten().tolist())
            parent_run.log({"loss": float(step)})
            step += 1
        parent_run.flush()  # workers fork while the parent's flush thread and writer are busy
        assert len(seen) == 64 * (epoch + 1)
    assert sorted(seen) == sorted(np.tile(np.arange(64.0) ** 2, 2).tolist())
    assert_parent_exact(parent_run, step)
