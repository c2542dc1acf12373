"""Adaptation inside a live run: what each exporter is given, and what its report says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel
from runtel.errors import RuntelError
from runtel.exporters.base import EPOCH_SERIES
from runtel.exporters.prometheus import PrometheusExporter
from runtel.exporters.tensorboard import TensorBoardExporter
from runtel.replay import export_run


def test_a_hook_only_exporter_gets_no_records_and_reports_no_drops(base_dir: Path) -> None:
    """Prometheus reads the run's OpenTelemetry gauges; the NaN points it never saw are not "dropped"."""
    exporter = PrometheusExporter(port=0)
    with runtel.init(project="hooks", base_dir=str(base_dir), exporters=[exporter], system_interval=0) as run:
        for step in range(100):
            run.log({"loss": math.nan if step % 2 else 1.0 / (step + 1)}, step=step)
    report = runtel.Store(base_dir).run(run.id).summary()["exporters"]["prometheus"]
    assert report["status"] == "ok"
    assert report["adaptations"] == {}
    assert report["batches_exported"] == 0  # the record path is skipped, not acknowledged and ignored


def test_replaying_to_a_hook_only_exporter_is_refused_with_the_reason(base_dir: Path) -> None:
    with runtel.init(project="hooks", base_dir=str(base_dir), system_interval=0) as run:
        run.log({"loss": 1.0}, step=0)
    exporter = PrometheusExporter(port=0)
    try:
        with pytest.raises(RuntelError, match="cannot be replayed"):
            export_run(runtel.Store(base_dir).run(run.id), exporter)
    finally:
        exporter.shutdown()


def test_a_user_metric_named_epoch_stays_apart_from_the_exporters_epochs(
    base_dir: Path, tmp_path: Path
) -> None:
    """TensorBoard gets the user's three ``epoch`` points and the run's three epochs, each in its own tag."""
    log_dir = tmp_path / "tb"
    with runtel.init(
        project="collide",
        name="epochs",
        base_dir=str(base_dir),
        exporters=[TensorBoardExporter(str(log_dir))],
        system_interval=0,
    ) as run:
        step = 0
        for epoch in run.epochs(3):
            for _ in range(4):
                run.log({"loss": 1.0 / (step + 1)}, step=step)
                step += 1
            run.log({"epoch": float(epoch)}, step=step - 1)
    (run_dir,) = log_dir.iterdir()
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("epoch")] == [(3, 0.0), (7, 1.0), (11, 2.0)]
    assert [e.value for e in accumulator.Scalars(EPOCH_SERIES)] == [0.0, 1.0, 2.0]
    assert max(e.step for e in accumulator.Scalars(EPOCH_SERIES)) <= 11
    report = runtel.Store(base_dir).run(run.id).summary()["exporters"]["tensorboard"]["adaptations"]
    assert "step_shifted" not in report and "step_moved" not in report
