"""The unified tracker seed (000): its examples run with only the import line changed.

W&B runs offline, MLflow on SQLite (``MLFLOW_TRACKING_URI``), TensorBoard in the test's folder;
each test then reads what the backend received with that backend's own reader.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel
from runtel.tracking import (
    BaseTracker,
    ExperimentLogger,
    MLflowTracker,
    MultiTracker,
    TensorBoardTracker,
    WandbTracker,
    create_multi_tracker,
    create_tracker,
)

from .ports import closed_port, free_port
from .readers.wandb_log import read_finished_log


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


@pytest.fixture
def model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def stored(tracker: Any) -> runtel.StoredRun:
    return runtel.Store().run(tracker.run.id)


def test_custom_base_tracker_subclass() -> None:
    calls: list[tuple[str, Any]] = []

    class CustomTracker(BaseTracker):
        def log_params(self, params: dict) -> None:
            calls.append(("params", params))

        def log_metrics(self, metrics: dict, step: int = None) -> None:  # noqa: RUF013  (the seed, verbatim)
            calls.append(("metrics", (metrics, step)))

        def log_artifact(self, path: str) -> None:  # type: ignore[override]
            calls.append(("artifact", path))

        def log_model(self, model, name: str) -> None:  # type: ignore[no-untyped-def]
            calls.append(("model", name))

        def finish(self) -> None:
            calls.append(("finish", None))

    tracker = CustomTracker()
    tracker.log_metrics({"loss": 1.0}, step=3)
    tracker.finish()
    assert calls == [("metrics", ({"loss": 1.0}, 3)), ("finish", None)]


def test_wandb_tracker_example(model: TinyNet, tmp_path: Path) -> None:
    tracker = WandbTracker(project_name="my_project", experiment_name="experiment_1", api_key="your-api-key")

    tracker.log_params({"lr": 0.001, "batch_size": 32})
    tracker.log_metrics({"loss": 0.5, "accuracy": 0.9}, step=100)
    tracker.log_model(model, "best_model")
    tracker.finish()

    log = read_finished_log(".", tracker.run.id)
    assert log.history[100]["loss"] == 0.5 and log.history[100]["accuracy"] == 0.9
    assert log.config["lr"] == 0.001 and log.config["batch_size"] == 32
    assert [a.type for a in log.artifacts] == ["model"]
    assert stored(tracker).summary()["exporters"]["wandb"]["status"] == "ok"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"your-api-key" in p.read_bytes()]


def test_mlflow_tracker_example_against_a_server_that_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("RUNTEL_EXPORT_RETRIES", "0")
    monkeypatch.setenv("RUNTEL_EXPORT_TIMEOUT", "5")

    # The seed's own example uses port 5000 on localhost; a port proven closed keeps the test from writing
    # into whatever server happens to listen there.
    tracker = MLflowTracker(project_name="my_project", tracking_uri=f"http://localhost:{closed_port()}")

    tracker.log_params({"epochs": 50, "optimizer": "adam"})
    tracker.log_metrics({"train_loss": 0.3, "val_loss": 0.5})
    tracker.finish()

    run = stored(tracker)
    assert run.params() == {"epochs": 50, "optimizer": "adam"}
    assert run.history("train_loss")[2].tolist() == [0.3]
    assert (
        run.summary()["exporters"]["mlflow"]["status"] == "failed"
    )  # reported; replay later with runtel export


def test_mlflow_tracker_logs_to_sqlite(tmp_path: Path) -> None:
    tracker = MLflowTracker(project_name="my_project", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    tracker.log_params({"epochs": 50, "optimizer": "adam"})
    tracker.log_metrics({"train_loss": 0.3, "val_loss": 0.5})
    tracker.log_metrics({"train_loss": 0.2, "val_loss": 0.4})
    tracker.finish()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("my_project").experiment_id])
    assert mlrun.data.params == {"epochs": "50", "optimizer": "adam"}
    history = client.get_metric_history(mlrun.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.3), (1, 0.2)]


def test_tensorboard_tracker_example_with_a_real_dashboard(model: TinyNet) -> None:
    tracker = TensorBoardTracker(project_name="my_project", log_dir="./runs")

    tracker.log_params({"hidden_dim": 256})
    tracker.log_metrics({"loss": 0.5}, step=100)
    tracker.log_histogram("weights", model.fc1.weight)
    tracker.finish()

    # Launch dashboard
    url = tracker.launch_dashboard(port=free_port())  # the seed's example says 6006
    try:
        with urllib.request.urlopen(url + "data/runs", timeout=30) as response:
            assert response.status == 200
            assert tracker.run.name in response.read().decode()
    finally:
        tracker.stop_dashboard()
    (run_dir,) = Path("runs").iterdir()
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [(100, 0.5)]
    assert accumulator.Tags()["histograms"] == ["histograms/weights"]


def test_multi_tracker_is_one_run_in_every_backend(tmp_path: Path) -> None:
    tracker = MultiTracker(
        project_name="my_project", experiment_name="exp_1", trackers=["wandb", "mlflow", "tensorboard"]
    )

    # Logs to all backends at once
    tracker.log_params({"lr": 0.001})
    tracker.log_metrics({"loss": 0.5}, step=100)
    tracker.finish()

    assert [r.name for r in runtel.Store().runs()] == ["exp_1"]
    assert read_finished_log(".", tracker.run.id).history[100]["loss"] == 0.5
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    mlruns = client.search_runs([client.get_experiment_by_name("my_project").experiment_id])
    assert [r.info.run_name for r in mlruns] == ["exp_1"]
    assert [d.name for d in Path("runs").iterdir()] == [f"exp_1_{tracker.run.id[:8]}"]


def test_user_tracker_inside_multi_tracker_and_its_failures_are_isolated(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Recorder(BaseTracker):
        """The seed's CustomTracker shape: ``log_artifact`` takes the path alone."""

        def log_params(self, params: dict[str, Any]) -> None:
            raise RuntimeError("recorder is broken for params")

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            seen.append(metrics)

        def log_artifact(self, path: str) -> None:  # type: ignore[override]
            seen.append(("artifact", path))

        def log_model(self, model: Any, name: str) -> None: ...

        def finish(self) -> None: ...

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w")
    tracker = MultiTracker(project_name="research", trackers=["tensorboard", Recorder()])
    tracker.log_params({"lr": 0.1})
    tracker.log_metrics({"accuracy": 0.95})
    tracker.log_artifact(str(weights))
    tracker.finish()
    assert seen == [{"accuracy": 0.95}, ("artifact", str(weights))]
    assert stored(tracker).params() == {"lr": 0.1}


def test_experiment_logger_example(model: TinyNet) -> None:
    dataloader = [torch.randn(16, 4) for _ in range(25)]

    def train_step(batch: torch.Tensor) -> torch.Tensor:
        loss = model(batch).pow(2).mean()
        loss.backward()
        return loss.detach()

    tracker = create_tracker("my_project", backend="wandb")
    logger = ExperimentLogger(tracker, log_interval=10)

    # Automatic step counting and periodic logging
    losses = []
    for batch in dataloader:
        loss = train_step(batch)
        losses.append(float(loss))
        logger.log_training_step({"loss": loss}, model=model)

    # Epoch logging
    logger.log_epoch_end(epoch=1, metrics={"val_loss": 0.3}, model=model)

    # System metrics
    system = logger.log_system_metrics()

    # Summary
    print(logger.get_training_summary())
    summary = logger.get_training_summary()
    logger.finish()

    run = stored(tracker)
    steps, _, values = run.history("loss")
    assert steps.tolist() == [9, 19, 24]  # the mean of each interval, at the interval's last step
    assert np.allclose(values, [np.mean(losses[0:10]), np.mean(losses[10:20]), np.mean(losses[20:25])])
    assert run.history("grad_norm")[2].size == 3 and (run.history("weight_norm")[2] > 0).all()
    assert run.history("val_loss")[2].tolist() == [0.3]
    assert "system/cpu.utilization" in system and "system/cpu.utilization" in run.metrics()
    assert [s.kind for s in run.spans()].count("epoch") == 1
    assert [a.kind for a in run.events() if type(a).__name__ == "ArtifactLogged"] == ["model"]
    assert summary["total_steps"] == 25 and summary["epochs"] == 1
    assert summary["best_metrics"]["val_loss"] == 0.3
    assert summary["mean_step_seconds"] > 0 and summary["steps_per_second"] > 0


def test_complete_training_pipeline_example(model: TinyNet) -> None:
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    dataloader = torch.utils.data.DataLoader(data, batch_size=8)
    val_loader = torch.utils.data.DataLoader(data, batch_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step(model: TinyNet, batch: list[torch.Tensor]) -> float:
        inputs, labels = batch
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validate(model: TinyNet, loader: torch.utils.data.DataLoader) -> dict[str, float]:
        with torch.no_grad():
            losses = [float(torch.nn.functional.cross_entropy(model(x), y)) for x, y in loader]
        return {"val_loss": sum(losses) / len(losses)}

    def train(model, dataloader, config):  # type: ignore[no-untyped-def]
        tracker = create_tracker(
            project_name="fishstick_experiments", experiment_name=config["name"], backend="wandb"
        )

        logger = ExperimentLogger(tracker, log_interval=10)
        logger.log_params(config)

        for epoch in range(config["epochs"]):
            for batch in dataloader:
                loss = train_step(model, batch)
                logger.log_training_step({"loss": loss})

            val_metrics = validate(model, val_loader)
            logger.log_epoch_end(epoch, val_metrics, model)
            logger.log_system_metrics()

        logger.finish()
        return logger, tracker

    logger, tracker = train(model, dataloader, {"name": "pipeline", "epochs": 3})
    summary = logger.get_training_summary()
    assert summary["total_steps"] == 24 and summary["epochs"] == 3
    run = stored(tracker)
    assert run.params() == {"name": "pipeline", "epochs": 3}
    assert run.history("val_loss")[0].tolist() == [7, 15, 23]
    assert [v.version for v in run_artifacts(tracker)] == [1, 2, 3]
    assert summary["best_metrics"]["val_loss"] == run.best("val_loss", mode="min")[0]


def run_artifacts(tracker: Any) -> list[Any]:
    return tracker.run.artifacts.versions("checkpoint.safetensors")


def test_convenience_functions_and_model_versioning(model: TinyNet) -> None:
    # Single backend
    tracker = create_tracker("project", backend="wandb")
    tracker.finish()

    # Multiple backends
    multi = create_multi_tracker(
        "project", trackers=["wandb", "tensorboard"], wandb_api_key="key", tensorboard_dir="./runs"
    )
    multi.finish()
    assert Path("runs").is_dir()

    torch.save(model.state_dict(), "model.pt")
    tracker = WandbTracker("model_registry")
    tracker.log_model(model, "production_model_v1")

    # Log with metadata
    tracker.log_artifact("model.pt", artifact_path="models")
    tracker.finish()
    names = tracker.run.artifacts.names()
    assert names == ["models/model.pt", "production_model_v1"]
    assert len(read_finished_log(".", tracker.run.id).artifacts) == 2


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(runtel.ConfigError, match="unknown backend 'comet'"):
        create_tracker("p", backend="comet")


def test_create_tracker_local_is_a_documented_local_tracker(base_dir: Path) -> None:
    from runtel.tracking import LocalTracker

    tracker = create_tracker("project", base_dir=str(base_dir))
    assert type(tracker) is LocalTracker
    tracker.log_metrics({"loss": 0.5}, step=3)
    tracker.finish()
    assert runtel.Store(base_dir).run(tracker.run.id).history("loss")[0].tolist() == [3]
