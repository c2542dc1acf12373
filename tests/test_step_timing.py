"""Step timing: a real run, real OTel instruments on run.meter, read back from the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.step_timing import StepTimer

STEP_SLEEP = 0.004
BATCH = 16


@pytest.fixture
def timed_run(base_dir: Path) -> Iterator[runtel.Run]:
    """A run flushed every 0.1 s, so a short loop spans several collection windows."""
    run = runtel.init(project="timing", name="timed", base_dir=str(base_dir), flush_interval=0.1)
    yield run
    run.finish()


def train(run: runtel.Run, timer: StepTimer, steps: int) -> None:
    for step in range(steps):
        with timer.step():
            time.sleep(STEP_SLEEP)
        run.log({"loss": 1.0 / (step + 1)})


def read(base_dir: Path, run: runtel.Run, name: str) -> tuple[np.ndarray, np.ndarray]:
    steps, _, values = runtel.Store(base_dir).run(run.id).history(name)
    return steps, values


def test_step_durations_become_histogram_series(timed_run: runtel.Run, base_dir: Path) -> None:
    timer = StepTimer(timed_run, batch_size=BATCH)
    train(timed_run, timer, 60)
    timed_run.finish()

    _, counts = read(base_dir, timed_run, "timing/step_seconds/count")
    _, sums = read(base_dir, timed_run, "timing/step_seconds/sum")
    _, minima = read(base_dir, timed_run, "timing/step_seconds/min")
    steps, maxima = read(base_dir, timed_run, "timing/step_seconds/max")
    assert counts.sum() == 60
    assert len(counts) >= 2  # several flush windows, one point each
    assert minima.min() >= STEP_SLEEP
    assert maxima.max() < 0.5
    assert STEP_SLEEP <= sums.sum() / 60 < 0.05
    assert np.all(np.diff(steps) >= 0) and steps.max() <= 59


def test_throughput_series_in_steps_and_samples(timed_run: runtel.Run, base_dir: Path) -> None:
    timer = StepTimer(timed_run, batch_size=BATCH)
    train(timed_run, timer, 60)
    timed_run.finish()

    _, steps_per_second = read(base_dir, timed_run, "timing/steps_per_second")
    _, samples_per_second = read(base_dir, timed_run, "timing/samples_per_second")
    assert len(steps_per_second) >= 2
    assert np.all((steps_per_second > 5) & (steps_per_second <= 1 / STEP_SLEEP))
    ratio = samples_per_second / steps_per_second
    assert np.allclose(ratio, BATCH, rtol=0.25)  # a step may end between the two gauges' callbacks


def test_no_batch_size_means_no_samples_series(timed_run: runtel.Run, base_dir: Path) -> None:
    timer = StepTimer(timed_run)
    train(timed_run, timer, 10)
    timed_run.finish()

    metrics = runtel.Store(base_dir).run(timed_run.id).metrics()
    assert "timing/steps_per_second" in metrics
    assert "timing/samples_per_second" not in metrics


def test_tick_times_whole_iterations_and_start_excludes_a_pause(
    timed_run: runtel.Run, base_dir: Path
) -> None:
    timer = StepTimer(timed_run, prefix="loop")
    for epoch in range(2):
        timer.start()
        for _ in range(20):
            time.sleep(STEP_SLEEP)
            timed_run.log({"epoch": epoch})
            timer.tick()
        time.sleep(0.3)  # validation: not a step, not training time
    timed_run.finish()

    _, counts = read(base_dir, timed_run, "loop/step_seconds/count")
    _, maxima = read(base_dir, timed_run, "loop/step_seconds/max")
    _, rates = read(base_dir, timed_run, "loop/steps_per_second")
    assert counts.sum() == 40
    assert maxima.max() < 0.2
    assert rates.min() > 1 / 0.05
