"""Steps: the largest one, the implicit step after it, accepted and refused types, threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import runtel
from runtel._values import MAX_STEP


def stored(run: runtel.Run, name: str) -> tuple[list[int], list[float]]:
    steps, _, values = runtel.Store(run.dir.parent).run(run.id).history(name)
    return steps.tolist(), values.tolist()


def test_largest_step_is_stored_and_the_implicit_step_after_it_is_refused_at_the_call(
    base_dir: Path,
) -> None:
    run = runtel.init(project="tests", name="steps", base_dir=str(base_dir))
    run.log({"loss": 1.0})
    run.log({"loss": 2.0}, step=MAX_STEP - 1)
    run.log({"loss": 3.0})  # the implicit step MAX_STEP still fits
    with pytest.raises(runtel.InvalidStepError, match="implicit step after 9223372036854775807"):
        run.log({"loss": 4.0})
    with pytest.raises(runtel.InvalidStepError, match="implicit step after"):
        run.log({"loss": 5.0})
    run.log({"loss": 6.0}, step=7)  # an explicit step is still fine, and implicit steps go on after it
    run.log({"loss": 7.0})
    run.finish()
    assert run.step == 8
    assert stored(run, "loss") == ([0, MAX_STEP - 1, MAX_STEP, 7, 8], [1.0, 2.0, 3.0, 6.0, 7.0])


def test_implicit_step_after_the_largest_is_refused_after_resume(base_dir: Path) -> None:
    first = runtel.init(project="tests", name="steps", base_dir=str(base_dir))
    first.log({"loss": 1.0}, step=MAX_STEP)
    first.finish()
    resumed = runtel.init(project="tests", base_dir=str(base_dir), resume=first.id)
    with pytest.raises(runtel.InvalidStepError, match="implicit step after"):
        resumed.log({"loss": 2.0})
    resumed.log({"loss": 3.0}, step=0)
    resumed.finish()
    assert stored(resumed, "loss") == ([MAX_STEP, 0], [1.0, 3.0])


@pytest.mark.parametrize(
    "step",
    [
        -1,
        2**63,
        True,
        False,
        np.bool_(True),
        3.0,
        np.float64(3.0),
        1.5,
        "3",
        None.__class__,
        torch.tensor(True),
    ],
    ids=repr,
)
def test_refused_steps_raise_and_record_nothing(run: runtel.Run, step: Any) -> None:
    run.log({"loss": 1.0})
    with pytest.raises(runtel.InvalidStepError):
        run.log({"loss": 2.0}, step=step)
    run.log({"loss": 3.0})
    run.finish()
    assert stored(run, "loss") == ([0, 1], [1.0, 3.0])


def test_whole_number_float_step_names_the_fix(run: runtel.Run) -> None:
    with pytest.raises(runtel.InvalidStepError, match=r"pass int\(step\)"):
        run.log({"loss": 1.0}, step=3.0)


@pytest.mark.parametrize(
    "step", [np.int8(5), np.uint64(5), np.int64(5), torch.tensor(5), torch.tensor([5]), 5], ids=repr
)
def test_integer_steps_of_every_kind_are_accepted(run: runtel.Run, step: Any) -> None:
    run.log({"loss": 1.0}, step=step)
    run.log({"loss": 2.0})
    run.finish()
    assert stored(run, "loss") == ([5, 6], [1.0, 2.0])


def test_implicit_steps_from_many_threads_are_unique_and_every_point_is_stored(base_dir: Path) -> None:
    run = runtel.init(project="tests", name="threads", base_dir=str(base_dir), system_interval=0)
    threads, calls = 4, 20_000
    start = threading.Barrier(threads)

    def worker(thread: int) -> None:
        start.wait()
        for i in range(calls):
            run.log({"who": float(thread * calls + i)})

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    run.finish()
    steps, values = stored(run, "who")
    assert sorted(steps) == list(range(threads * calls))  # unique, no gap
    assert sorted(values) == [float(v) for v in range(threads * calls)]  # every point, once
    for thread in range(threads):  # each thread's points in its own logging order, steps rising
        own = [s for s, v in zip(steps, values, strict=True) if thread * calls <= v < (thread + 1) * calls]
        assert own == sorted(own)
