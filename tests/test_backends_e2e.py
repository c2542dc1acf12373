"""One run, four real backends at once, through runtel.init; then replay with `runtel export`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel
from runtel.cli import main as cli
from runtel.exporters.base import EPOCH_SERIES

from .ports import closed_port
from .readers.neptune_offline import offline_runs, read_run
from .readers.wandb_log import read_finished_log

METRICS = [f"m{k}" for k in range(10)]
FORWARD, REPLAYED = 7000, 3000  # steps 0..6999, then a re-run of steps 4000..6999


@pytest.fixture(autouse=True)
def _offline_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def value(step: int, k: int, segment: int) -> float:
    if k == 0 and step == 100:
        return float("nan")
    if k == 0 and step == 200:
        return float("inf")
    return segment * 1000.0 + k + step / 7.0


def backend_options(tmp: Path) -> dict[str, dict[str, Any]]:
    return {
        "wandb": {"mode": "offline", "dir": str(tmp / "wandb-root")},
        "mlflow": {
            "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
            "artifact_location": str(tmp / "mlartifacts"),
        },
        "tensorboard": {"log_dir": str(tmp / "tb")},
        "neptune": {"mode": "offline", "data_directory": str(tmp / "neptune")},
    }


@pytest.fixture(scope="module")
def all_four(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, runtel.StoredRun]:
    tmp = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_SILENT", "true")
        patch.setenv("WANDB_MODE", "offline")
        run = runtel.init(
            project="e2e",
            name="all-four",
            base_dir=str(tmp / "runs"),
            config={"lr": 0.1, "prompt": "x" * 10_000, "layers": [64, 32]},
            exporters=["wandb", "mlflow", "tensorboard", "neptune"],
            exporter_options=backend_options(tmp),
            export_timeout=300,
            system_interval=0,
        )
        for segment, steps in enumerate((range(FORWARD), range(FORWARD - REPLAYED, FORWARD))):
            for step in steps:
                run.log({name: value(step, k, segment) for k, name in enumerate(METRICS)}, step=step)
        run.finish()
    return tmp, runtel.Store(tmp / "runs").run(run.id)


def stored_series(stored: runtel.StoredRun, name: str) -> tuple[np.ndarray, np.ndarray]:
    steps, _, values = stored.history(name)
    return steps, values


@pytest.mark.slow  # the all_four fixture: 66 s measured (100,000 points to four backends)
def test_every_exporter_finished_ok_and_the_store_has_every_point(
    all_four: tuple[Path, runtel.StoredRun],
) -> None:
    _, stored = all_four
    report = stored.summary()["exporters"]
    assert {name: r["status"] for name, r in report.items()} == dict.fromkeys(
        ["local", "wandb", "mlflow", "tensorboard", "neptune"], "ok"
    )
    assert all(r["points_undelivered"] == 0 for r in report.values())
    for name in METRICS:
        assert stored_series(stored, name)[0].size == FORWARD + REPLAYED


@pytest.mark.slow  # the all_four fixture: 66 s measured (100,000 points to four backends)
def test_mlflow_holds_every_point_with_infinity_clamped_as_reported(
    all_four: tuple[Path, runtel.StoredRun],
) -> None:
    tmp, stored = all_four
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    (mlrun,) = client.search_runs([experiment.experiment_id], f"tags.`runtel.run_id` = '{stored.id}'")
    adaptations = stored.summary()["exporters"]["mlflow"]["adaptations"]
    assert adaptations["infinity_clamped"]["count"] == 1
    assert adaptations["param_truncated"]["count"] == 1
    assert mlrun.data.params["prompt"] == "x" * 6000
    for name in METRICS:
        history = client.get_metric_history(mlrun.info.run_id, name)
        steps, values = stored_series(stored, name)
        expected = np.nan_to_num(values, nan=np.nan, posinf=np.finfo(np.float64).max)
        got = sorted((m.step, m.value) for m in history)
        want = sorted(zip(steps.tolist(), expected.tolist(), strict=True))
        assert len(got) == len(want) == FORWARD + REPLAYED
        assert [step for step, _ in got] == [step for step, _ in want]
        assert np.array_equal([v for _, v in got], [v for _, v in want], equal_nan=True)


@pytest.mark.slow  # the all_four fixture: 66 s measured (100,000 points to four backends)
def test_tensorboard_holds_every_point_with_shifted_steps_as_reported(
    all_four: tuple[Path, runtel.StoredRun],
) -> None:
    tmp, stored = all_four
    (run_dir,) = (tmp / "tb").iterdir()
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    adaptations = stored.summary()["exporters"]["tensorboard"]["adaptations"]
    assert adaptations["step_shifted"]["count"] == REPLAYED * len(METRICS)
    for name in METRICS:
        events = accumulator.Scalars(name)
        _, values = stored_series(stored, name)
        assert len(events) == FORWARD + REPLAYED
        assert [e.step for e in events] == list(range(FORWARD + REPLAYED))  # the replayed segment follows on
        assert np.array_equal(
            np.array([e.value for e in events], dtype=np.float32), values.astype(np.float32), equal_nan=True
        )


@pytest.mark.slow  # the all_four fixture: 66 s measured (100,000 points to four backends)
def test_wandb_holds_every_point_with_shifted_steps_as_reported(
    all_four: tuple[Path, runtel.StoredRun],
) -> None:
    tmp, stored = all_four
    log = read_finished_log(tmp / "wandb-root", stored.id)
    adaptations = stored.summary()["exporters"]["wandb"]["adaptations"]
    assert adaptations["step_shifted"]["count"] == REPLAYED * len(METRICS)
    for name in METRICS:
        got = [(step, row[name]) for step, row in sorted(log.history.items()) if name in row]
        _, values = stored_series(stored, name)
        assert [step for step, _ in got] == list(range(FORWARD + REPLAYED))
        assert np.array_equal(np.array([v for _, v in got], dtype=np.float64), values, equal_nan=True)
    assert log.config["lr"] == 0.1


@pytest.mark.slow  # the all_four fixture: 66 s measured (100,000 points to four backends)
def test_neptune_holds_every_finite_point_and_reports_the_dropped_ones(
    all_four: tuple[Path, runtel.StoredRun],
) -> None:
    tmp, stored = all_four
    (directory,) = offline_runs(tmp / "neptune")
    neptune_run = read_run(directory)
    adaptations = stored.summary()["exporters"]["neptune"]["adaptations"]
    assert adaptations["non_finite_dropped"]["count"] == 2
    for name in METRICS:
        points = neptune_run.series[f"metrics/{name}"]
        _, values = stored_series(stored, name)
        finite = values[np.isfinite(values)]
        assert len(points) + (values.size - finite.size) == FORWARD + REPLAYED
        assert [p[1] for p in points] == finite.tolist()
        steps = [p[0] for p in points]
        assert steps == sorted(set(steps))


@pytest.mark.slow  # 63 s measured
def test_dead_mlflow_server_does_not_slow_training_and_the_run_replays_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{closed_port()}"
    run = runtel.init(
        project="dead",
        name="dead-server",
        base_dir=str(tmp_path / "runs"),
        exporters=["mlflow"],
        exporter_options={"mlflow": {"tracking_uri": dead}},
        export_retries=1,
        export_timeout=5,
    )
    started = time.perf_counter()
    for step in range(50_000):
        run.log({"loss": 1.0 / (step + 1)})
    per_call = (time.perf_counter() - started) / 50_000
    run.finish()
    assert per_call < 1e-3  # never blocked: a blocked call would wait out the 2 s HTTP timeout
    stored = runtel.Store(tmp_path / "runs").run(run.id)
    assert stored.history("loss")[0].size == 50_000
    mlflow_report = stored.summary()["exporters"]["mlflow"]
    assert mlflow_report["status"] == "failed"
    assert mlflow_report["error"]

    target = f"sqlite:///{tmp_path}/later.db"
    argv = [
        "export",
        run.id,
        "--to",
        "mlflow",
        "--base-dir",
        str(tmp_path / "runs"),
        "--tracking-uri",
        target,
    ]
    argv += ["-o", f"artifact_location={tmp_path / 'art'}"]
    assert cli(argv) == 0
    client = MlflowClient(target)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("dead").experiment_id])
    history = client.get_metric_history(mlrun.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(50_000))

    assert cli(argv) == 1  # a second replay to the same target is refused ...
    assert "already" in capsys.readouterr().err
    assert cli([*argv, "--force"]) == 0  # ... unless forced
    runs = client.search_runs([client.get_experiment_by_name("dead").experiment_id])
    assert len(runs) == 1


@pytest.mark.slow  # the all_four fixture: 66 s measured (100,000 points to four backends)
def test_every_backend_gets_the_run_summary_of_every_metric(all_four: tuple[Path, runtel.StoredRun]) -> None:
    tmp, stored = all_four
    expected = stored.summary()["metrics"]
    assert expected["m1"]["count"] == FORWARD + REPLAYED and expected["m1"]["last_step"] == FORWARD - 1

    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    (mlrun,) = client.search_runs(
        [client.get_experiment_by_name("e2e").experiment_id], f"tags.`runtel.run_id` = '{stored.id}'"
    )
    summary_json = client.download_artifacts(mlrun.info.run_id, "summary.json", str(tmp / "downloaded"))
    assert json.loads(Path(summary_json).read_text())["metrics"]["m1"] == expected["m1"]

    assert read_finished_log(tmp / "wandb-root", stored.id).summary["metrics"]["m1"] == expected["m1"]

    (directory,) = offline_runs(tmp / "neptune")
    fields = read_run(directory).fields
    assert {k: fields[f"summary/metrics/m1/{k}"] for k in expected["m1"]} == expected["m1"]

    (run_dir,) = (tmp / "tb").iterdir()
    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    (text,) = accumulator.Tensors("runtel/summary/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert f'"count": {FORWARD + REPLAYED}' in shown and '"m9"' in shown


CRASHING = """
import os, runtel, sys
run = runtel.init(project="crashy", name="crashed", base_dir=sys.argv[1], config={"lr": 0.1})
for epoch in run.epochs(2):
    for _ in range(50):
        run.log({"loss": 1.0 / (run.step + 2)})
run.flush()
print(run.id, flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("crashed")
    result = subprocess.run(
        [sys.executable, "-c", CRASHING, str(tmp / "runs")], capture_output=True, text=True, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    run_id = result.stdout.strip()
    assert runtel.Store(tmp / "runs").run(run_id).status == "crashed"
    return tmp, run_id


@pytest.mark.parametrize("backend", ["mlflow", "tensorboard", "wandb", "neptune"])
def test_a_crashed_run_replays_to_every_backend_marked_as_crashed(
    crashed_run: tuple[Path, str], backend: str, tmp_path: Path
) -> None:
    tmp, run_id = crashed_run
    target = {
        "mlflow": [
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "-o",
            f"artifact_location={tmp_path}/a",
        ],
        "tensorboard": ["--log-dir", str(tmp_path / "tb")],
        "wandb": ["-o", "mode=offline", "-o", f"dir={tmp_path}"],
        "neptune": ["-o", "mode=offline", "-o", f"data_directory={tmp_path / 'neptune'}"],
    }[backend]
    assert cli(["export", run_id, "--to", backend, "--base-dir", str(tmp / "runs"), *target]) == 0
    replays = runtel.Store(tmp / "runs").run(run_id).summary()["replays"]
    assert [(r["exporter"], r["status"], r["points"]) for r in replays if r["exporter"] == backend] == [
        (backend, "ok", 100)
    ]
    steps, epochs = list(range(100)), [(49, 0), (99, 1)]  # epoch 1 ended before the kill
    if backend == "mlflow":
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        (mlrun,) = client.search_runs([client.get_experiment_by_name("crashy").experiment_id])
        assert (mlrun.info.status, mlrun.data.tags["runtel.status"]) == ("KILLED", "crashed")
        assert sorted(m.step for m in client.get_metric_history(mlrun.info.run_id, "loss")) == steps
        assert [
            (m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, EPOCH_SERIES)
        ] == epochs
    elif backend == "tensorboard":
        from tensorboardX.proto import api_pb2, plugin_hparams_pb2

        (run_dir,) = (tmp_path / "tb").iterdir()
        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        assert [e.step for e in accumulator.Scalars("loss")] == steps
        assert [(e.step, e.value) for e in accumulator.Scalars(EPOCH_SERIES)] == epochs
        (status,) = accumulator.Tensors("runtel/status/text_summary")
        assert status.tensor_proto.string_val[0].decode() == "crashed"
        end = accumulator.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
        info = plugin_hparams_pb2.HParamsPluginData.FromString(end).session_end_info
        assert info.status == api_pb2.Status.Value("STATUS_FAILURE")
    elif backend == "wandb":
        log = read_finished_log(tmp_path, run_id)
        assert sorted(log.history) == steps and log.exit_code == 1
        assert [
            (step, row[EPOCH_SERIES]) for step, row in log.history.items() if EPOCH_SERIES in row
        ] == epochs
        assert log.summary["runtel/status"] == "crashed" and log.summary["metrics"]["loss"]["count"] == 100
    else:
        (directory,) = offline_runs(tmp_path / "neptune")
        neptune_run = read_run(directory)
        assert [p[0] for p in neptune_run.series["metrics/loss"]] == steps
        assert [(p[0], p[1]) for p in neptune_run.series[EPOCH_SERIES]] == epochs
        assert neptune_run.fields["runtel/status"] == "crashed" and neptune_run.fields["sys/failed"] is True
