"""W&B beside other backends when one process holds several runs, some of them left open at exit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from runtel.exporters.base import ExportResult
from runtel.exporters.wandb import COMPLETE_MARKER, WandbExporter
from runtel.records import HistogramLogged, MetricPoints, RunEnded, RunStarted
from tests.conftest import run_python
from tests.readers.wandb_log import read_finished_log

STEPS = 300

#: Four runs in one process; each opens its exporters in another order, two are finished out of
#: order and two are left open for runtel's exit hook, the first of them before W&B ever started.
SCRIPT = """
import json, runtel
from runtel.exporters.mlflow import MlflowExporter
from runtel.exporters.tensorboard import TensorBoardExporter
from runtel.exporters.wandb import COMPLETE_MARKER, WandbExporter

def make(kind):
    if kind == "wandb":
        return WandbExporter(mode="offline", dir="wandb-root")
    if kind == "mlflow":
        return MlflowExporter(tracking_uri="sqlite:///mlflow.db", artifact_location="mlartifacts")
    return TensorBoardExporter(log_dir="tb")

plan = {
    "first": ["mlflow"],
    "second": ["wandb", "tensorboard"],
    "third": ["tensorboard", "mlflow", "wandb"],
    "fourth": ["wandb", "mlflow"],
}
runs = {}
for k, (name, kinds) in enumerate(plan.items()):
    exporters = [make(x) for x in kinds]
    runs[name] = run = runtel.init(project="many", name=name, base_dir="runs", exporters=exporters)
    for step in range(%(steps)d):
        run.log({"loss": k * 1000 + step / 8, "acc": step / %(steps)d}, step=step)
runs["fourth"].finish()
runs["second"].finish()
print(json.dumps({name: [run.id, plan[name]] for name, run in runs.items()}))
"""


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    tmp = tmp_path_factory.mktemp("many")
    out = run_python(SCRIPT % {"steps": STEPS}, tmp, env={"WANDB_SILENT": "true", "WANDB_MODE": "offline"})
    return tmp, json.loads(out.splitlines()[-1])


def expected(k: int) -> dict[str, list[float]]:
    return {"loss": [k * 1000 + s / 8 for s in range(STEPS)], "acc": [s / STEPS for s in range(STEPS)]}


def test_every_exporter_of_every_run_reports_ok(many_runs: tuple[Path, dict[str, list]]) -> None:
    tmp, runs = many_runs
    for run_id, kinds in runs.values():
        (summary,) = (tmp / "runs").glob(f"*_{run_id[:8]}/summary.json")
        report = json.loads(summary.read_text())["exporters"]
        assert {name: report[name]["status"] for name in kinds} == dict.fromkeys(kinds, "ok"), report


def test_every_wandb_run_holds_every_point_and_its_exit(many_runs: tuple[Path, dict[str, list]]) -> None:
    tmp, runs = many_runs
    for k, (run_id, kinds) in enumerate(runs.values()):
        if "wandb" not in kinds:
            continue
        log = read_finished_log(tmp / "wandb-root", run_id)
        assert sorted(log.history) == list(range(STEPS))
        for name, values in expected(k).items():
            assert [log.history[s][name] for s in range(STEPS)] == values
        assert log.exit_code == 0 and log.summary["runtel/status"] == "completed"
    assert len(list((tmp / "wandb-root" / "wandb").glob("offline-run-*"))) == 3  # no empty leftovers


def test_every_mlflow_run_holds_every_point(many_runs: tuple[Path, dict[str, list]]) -> None:
    tmp, runs = many_runs
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("many")
    for k, (run_id, kinds) in enumerate(runs.values()):
        if "mlflow" not in kinds:
            continue
        (mlrun,) = client.search_runs([experiment.experiment_id], f"tags.`runtel.run_id` = '{run_id}'")
        assert mlrun.info.status == "FINISHED"
        for name, values in expected(k).items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, name))
            assert history == list(enumerate(values))


def test_every_tensorboard_run_holds_every_point(many_runs: tuple[Path, dict[str, list]]) -> None:
    tmp, runs = many_runs
    for k, (run_id, kinds) in enumerate(runs.values()):
        if "tensorboard" not in kinds:
            continue
        (run_dir,) = (tmp / "tb").glob(f"*{run_id[:8]}*")
        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        for name, values in expected(k).items():
            events = accumulator.Scalars(name)
            assert [e.step for e in events] == list(range(STEPS))
            assert np.array_equal([e.value for e in events], np.float32(values))


RUN_ID = "5ce0e9a56015fec5aadfa328ae398115"


def started() -> RunStarted:
    return RunStarted(run_id=RUN_ID, name="retry", project="p", start_time=0.0, config={"lr": 0.1})


def points(steps: range) -> MetricPoints:
    return MetricPoints(
        names=("x",),
        index=np.zeros(len(steps), dtype=np.int32),
        steps=np.asarray(steps, dtype=np.int64),
        times=np.arange(len(steps), dtype=np.float64),
        values=np.asarray(steps, dtype=np.float64) / 4,
        span_ids=np.zeros(len(steps), dtype=np.uint64),
    )


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_a_retried_first_batch_continues_the_open_run(tmp_path: Path) -> None:
    exporter = WandbExporter(mode="offline", dir=str(tmp_path))
    too_many_bins = HistogramLogged(  # wandb.Histogram refuses more than 512 bins
        name="h",
        step=5,
        time=0.0,
        bin_edges=np.arange(601.0),
        counts=np.ones(600, dtype=np.int64),
        min=0.0,
        max=600.0,
        mean=300.0,
        std=1.0,
        count=600,
    )
    with pytest.raises(ValueError):
        exporter.export([started(), points(range(10)), too_many_bins])
    batch = [started(), points(range(10)), points(range(10, 20)), RunEnded(status="completed", end_time=1.0)]
    assert exporter.export(batch) is ExportResult.SUCCESS
    log = read_finished_log(tmp_path, RUN_ID)
    assert {step: row["x"] for step, row in log.history.items()} == {s: s / 4 for s in range(20)}


def test_an_export_cut_short_is_replaced_without_force(tmp_path: Path) -> None:
    cut = WandbExporter(mode="offline", dir=str(tmp_path))
    cut.export([started(), points(range(5))])
    cut.shutdown()  # no RunEnded: finished as crashed, never marked complete
    retry = WandbExporter(mode="offline", dir=str(tmp_path))
    retry.export([started(), points(range(8)), RunEnded(status="completed", end_time=1.0)])
    log = read_finished_log(tmp_path, RUN_ID)  # one folder of the run is left
    assert {step: row["x"] for step, row in log.history.items()} == {s: s / 4 for s in range(8)}
    assert log.summary["runtel/status"] == "completed"
    (folder,) = (tmp_path / "wandb").glob(f"offline-run-*-{RUN_ID}")
    assert json.loads((folder / COMPLETE_MARKER).read_text())["run_id"] == RUN_ID
