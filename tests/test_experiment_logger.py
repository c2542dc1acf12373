"""``ExperimentLogger`` beyond the seed's examples: timing, epoch spans, system samples, checkpoints.

Runtel-backed trackers write to a real store that each test reads back with ``runtel.Store``;
user trackers are ordinary ``BaseTracker`` subclasses that keep what they receive.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

import runtel
from runtel.errors import ConfigError, InvalidParamError, InvalidStepError
from runtel.tracking import BaseTracker, ExperimentLogger, MultiTracker, RunTracker, create_tracker

STEP_SECONDS = 0.01
PAUSE_SECONDS = 0.6


class Recorder(BaseTracker):
    """A user's own tracker: it keeps every call it receives."""

    def __init__(self) -> None:
        self.metrics: list[tuple[dict[str, Any], int | None]] = []
        self.models: list[tuple[Any, str]] = []
        self.finished = False

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.metrics.append((dict(metrics), step))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, model: Any, name: str) -> None:
        self.models.append((model, name))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def tracker(base_dir: Path) -> RunTracker:
    """A runtel-backed tracker without system sampling of its own (``RUNTEL_SYSTEM_INTERVAL=0``)."""
    return create_tracker("logger-tests", backend="local", base_dir=str(base_dir))


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def train(logger: ExperimentLogger, epochs: tuple[int, ...], steps: int, pause: float = 0.0) -> None:
    """``steps`` steps of ``STEP_SECONDS`` per epoch, then ``pause`` seconds of "validation"."""
    for epoch in epochs:
        for _ in range(steps):
            time.sleep(STEP_SECONDS)
            logger.log_training_step({"loss": 1.0})
        time.sleep(pause)
        logger.log_epoch_end(epoch, {"val_loss": 0.5})


def stored(tracker: RunTracker | MultiTracker, base_dir: Path) -> runtel.StoredRun:
    return runtel.Store(base_dir).run(tracker.run.id)


def test_validation_between_epochs_is_not_step_time(tracker: RunTracker) -> None:
    logger = ExperimentLogger(tracker, log_interval=2)
    train(logger, epochs=(0, 1), steps=4, pause=PAUSE_SECONDS)
    summary = logger.get_training_summary()
    logger.finish()
    # 6 timed steps (the first of each epoch follows the pause and is not timed). Counting the
    # pause as a step would make the mean at least 0.6 / 7 = 0.086 s.
    assert STEP_SECONDS <= summary["mean_step_seconds"] < PAUSE_SECONDS / 8
    assert summary["steps_per_second"] == pytest.approx(1 / summary["mean_step_seconds"])


def test_samples_per_second_needs_a_batch_size(tracker: RunTracker) -> None:
    with_batch = ExperimentLogger(tracker, batch_size=32)
    without = ExperimentLogger(Recorder())
    for logger in (with_batch, without):
        train(logger, epochs=(0,), steps=3)
    summary = with_batch.get_training_summary()
    assert summary["samples_per_second"] == pytest.approx(32 * summary["steps_per_second"])
    assert math.isnan(without.get_training_summary()["samples_per_second"])
    with_batch.finish()
    without.finish()


def test_wall_time_stops_at_finish(tracker: RunTracker) -> None:
    logger = ExperimentLogger(tracker)
    train(logger, epochs=(0,), steps=2)
    logger.finish()
    at_finish = logger.get_training_summary()["wall_time_seconds"]
    time.sleep(0.2)
    assert logger.get_training_summary()["wall_time_seconds"] == at_finish


def test_epoch_span_is_named_after_the_epoch_given_and_starts_at_its_first_step(
    tracker: RunTracker, base_dir: Path
) -> None:
    logger = ExperimentLogger(tracker, log_interval=2)
    train(logger, epochs=(1, 2), steps=4)
    logger.finish()
    spans = [span for span in stored(tracker, base_dir).spans() if span.kind == "epoch"]
    found = [
        (s.name, s.attributes["epoch"], s.attributes["runtel.step_start"], s.attributes["runtel.step_end"])
        for s in spans
    ]
    assert found == [("epoch 1", 1, 0, 3), ("epoch 2", 2, 4, 7)]


def send_over_loopback(size: int) -> None:
    """``size`` bytes through a TCP connection on 127.0.0.1 (counted by the loopback interface)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        received = 0

        def receive() -> None:
            nonlocal received
            connection, _ = server.accept()
            with connection:
                while chunk := connection.recv(1 << 16):
                    received += len(chunk)

        reader = threading.Thread(target=receive)
        reader.start()
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(b"x" * size)
        reader.join()
    assert received == size


def busy_fraction(before: list[Any], after: list[Any]) -> float:
    """Mean busy share of all CPUs between two ``psutil.cpu_times(percpu=True)`` readings, in %."""
    busy = total = 0.0
    for start, end in zip(before, after, strict=True):
        spent = sum(end) - sum(start) - (end.guest - start.guest) - (end.guest_nice - start.guest_nice)
        idle = end.idle - start.idle + end.iowait - start.iowait
        busy, total = busy + spent - idle, total + spent
    return 100 * busy / total


def test_system_samples_cover_the_time_since_the_previous_sample(tracker: RunTracker, base_dir: Path) -> None:
    logger = ExperimentLogger(tracker)
    first = logger.log_system_metrics()
    cpu_before = psutil.cpu_times(percpu=True)
    send_over_loopback(2_000_000)
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:  # keep one CPU busy
        pass
    cpu_after = psutil.cpu_times(percpu=True)
    second = logger.log_system_metrics()
    logger.finish()

    # A sampler made afresh for each call would count bytes from just before the sample.
    assert second["system/network.sent_bytes"] - first["system/network.sent_bytes"] >= 2_000_000
    assert second["system/network.recv_bytes"] - first["system/network.recv_bytes"] >= 2_000_000
    for series in ("disk.read_bytes", "disk.write_bytes"):
        assert 0 <= first[f"system/{series}"] <= second[f"system/{series}"]
    # ... and would measure CPU over microseconds (0 or 100 %), not over the 0.3 s between calls.
    assert second["system/cpu.utilization"] == pytest.approx(busy_fraction(cpu_before, cpu_after), abs=15)
    _, _, sent = stored(tracker, base_dir).history("system/network.sent_bytes")
    assert sent.tolist() == [first["system/network.sent_bytes"], second["system/network.sent_bytes"]]


def test_no_system_sample_after_finish() -> None:
    recorder = Recorder()
    logger = ExperimentLogger(recorder)
    assert logger.log_system_metrics()
    logger.finish()
    assert logger.log_system_metrics() == {}
    assert len(recorder.metrics) == 1


def test_checkpoint_goes_to_a_user_tracker(model: torch.nn.Module) -> None:
    recorder = Recorder()
    logger = ExperimentLogger(recorder, log_interval=2)
    logger.log_training_step({"loss": 1.0})
    logger.log_epoch_end(3, {"val_loss": 0.5}, model=model)
    logger.finish()
    assert recorder.models == [(model, "checkpoint")]
    assert recorder.metrics == [({"loss": 1.0}, 0), ({"val_loss": 0.5, "epoch": 3.0}, 0)]
    assert recorder.finished


def test_checkpoint_goes_to_the_run_and_to_user_trackers_in_a_multi_tracker(
    model: torch.nn.Module, base_dir: Path
) -> None:
    recorder = Recorder()
    tracker = MultiTracker("logger-tests", trackers=[recorder], base_dir=str(base_dir))
    logger = ExperimentLogger(tracker)
    train(logger, epochs=(0, 1), steps=1)
    logger.log_epoch_end(2, {"val_loss": 0.25}, model=model)
    logger.finish()
    (version,) = tracker.run.artifacts.versions("checkpoint.safetensors")
    assert version.metadata["epoch"] == 2
    assert recorder.models == [(model, "checkpoint")]


def test_a_checkpoint_that_is_not_a_model_is_an_error_and_the_epoch_still_ends(
    tracker: RunTracker, base_dir: Path
) -> None:
    logger = ExperimentLogger(tracker)
    logger.log_training_step({"loss": 1.0})
    with pytest.raises(InvalidParamError, match=r"log_model takes a path or a torch nn\.Module"):
        logger.log_epoch_end(0, {"val_loss": 0.5}, model={"weights": [1.0]})
    logger.finish()
    assert logger.epochs_done == 1
    assert [s.name for s in stored(tracker, base_dir).spans() if s.kind == "epoch"] == ["epoch 0"]


def test_bad_arguments_are_clear_errors(tracker: RunTracker) -> None:
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        ExperimentLogger(tracker, batch_size=0)
    with pytest.raises(ConfigError, match="log_interval must be >= 1"):
        ExperimentLogger(tracker, log_interval=0)
    logger = ExperimentLogger(tracker)
    with pytest.raises(InvalidStepError, match=r"epoch must be a non-negative integer, got 1\.5"):
        logger.log_epoch_end(1.5, {})  # type: ignore[arg-type]
    logger.finish()
