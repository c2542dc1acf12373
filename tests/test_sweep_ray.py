"""Ray Tune trials recorded by the driver's callback, on a local Ray cluster the test starts (loopback)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune

import runtel
from runtel.integrations.ray import RuntelLoggerCallback
from runtel.store.artifacts import ArtifactStore
from runtel.sweep import sweep_runs

pytestmark = pytest.mark.slow

_ITERATIONS = 3


def _score(x: int, i: int) -> float:
    return x * 1.5 + i * 0.125


def _trainable(config: dict[str, Any]) -> None:
    """Reports three scores; x=3 raises after two; x=2 fails once (a marker file) and is retried;
    x=4 saves a checkpoint with its last report."""
    x, marker = config["x"], Path(config["marker"])
    for i in range(_ITERATIONS):
        if x == 3 and i == 2:
            raise RuntimeError("trial x=3 diverged")
        if x == 2 and i == 0 and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("transient failure")
        metrics = {"score": _score(x, i), "nested": {"loss": 1.0 / (i + 1)}}
        if x == 4 and i == _ITERATIONS - 1:
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "weights.txt").write_text(f"x={x}")
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster of two CPUs for the module, on loopback."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def experiment(
    cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, tune.ResultGrid]]:
    root = tmp_path_factory.mktemp("ray")
    base_dir = root / "runs"
    callback = RuntelLoggerCallback(
        project="ray", metric="score", mode="max", base_dir=str(base_dir), system_interval=0
    )
    tuner = tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search([1, 2, 3, 4]), "marker": str(root / "marker")},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=tune.RunConfig(
            name="ray-sweep",
            storage_path=str(root / "ray_results"),
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    yield base_dir, tuner.fit()


def test_every_reported_metric_is_in_the_trial_run(experiment: tuple[Path, tune.ResultGrid]) -> None:
    base_dir, _ = experiment
    sweep, trials = sweep_runs(runtel.Store(base_dir), "ray-sweep")
    assert sweep is not None and sweep.status == "completed" and len(trials) == 4
    by_x = {run.params()["x"]: run for run in trials}
    assert sorted(by_x) == [1, 2, 3, 4]
    for x in (1, 4):
        steps, _, values = by_x[x].history("score")
        assert steps.tolist() == [1, 2, 3]
        assert values.tolist() == [_score(x, i) for i in range(_ITERATIONS)]
        assert by_x[x].history("nested/loss")[2].tolist() == [1.0, 0.5, 1.0 / 3]
        assert by_x[x].status == "completed"
    assert "time_this_iter_s" not in by_x[1].metrics()
    # x=3 fails on both attempts (max_failures=1): each attempt's reports, in order
    assert by_x[3].history("score")[2].tolist() == [_score(3, 0), _score(3, 1)] * 2


def test_a_failing_trial_is_failed_and_a_retried_one_counts_its_restart(
    experiment: tuple[Path, tune.ResultGrid],
) -> None:
    base_dir, _ = experiment
    _, trials = sweep_runs(runtel.Store(base_dir), "ray-sweep")
    by_x = {run.params()["x"]: run for run in trials}
    assert by_x[3].status == "failed" and "trial x=3 diverged" in by_x[3].summary()["error"]
    assert by_x[3].history("ray/restarts")[2].tolist() == [1]
    retried = by_x[2]
    assert retried.status == "completed"
    assert retried.history("ray/restarts")[2].tolist() == [1]
    assert retried.history("score")[2].tolist() == [_score(2, i) for i in range(_ITERATIONS)]


def test_checkpoints_are_artifacts_and_the_sweep_holds_the_best(
    experiment: tuple[Path, tune.ResultGrid],
) -> None:
    base_dir, grid = experiment
    sweep, trials = sweep_runs(runtel.Store(base_dir), "ray-sweep")
    by_x = {run.params()["x"]: run for run in trials}
    (version,) = ArtifactStore(by_x[4].dir).versions("checkpoint")
    assert (Path(version.path) / "weights.txt").read_text() == "x=4"
    assert sweep is not None
    assert sweep.history("best/score")[2][-1] == grid.get_best_result().metrics["score"] == _score(4, 2)
    steps, _, states = sweep.history("trial_state")
    assert dict(zip(steps.tolist(), states.tolist(), strict=True)) == {0: 0, 1: 0, 2: 2, 3: 0}


def _train_loop(config: dict[str, Any]) -> None:
    """A Ray Train worker loop: two reports, each with a checkpoint."""
    for epoch in range(2):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "weights.txt").write_text(f"epoch {epoch}")
            ray.train.report(
                {"loss": 1.0 / (epoch + 1)}, checkpoint=ray.train.Checkpoint.from_directory(folder)
            )


def test_ray_train_reports_and_checkpoints_inside_a_trial(cluster: None, tmp_path: Path) -> None:
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    storage = str(tmp_path / "ray_results")

    def trial(config: dict[str, Any]) -> None:
        DataParallelTrainer(
            _train_loop,
            scaling_config=ray.train.ScalingConfig(num_workers=1),
            run_config=ray.train.RunConfig(
                name="inner", storage_path=storage, callbacks=[TuneReportCallback()]
            ),
        ).fit()

    base_dir = tmp_path / "runs"
    callback = RuntelLoggerCallback(project="ray", base_dir=str(base_dir), system_interval=0)
    tune.Tuner(
        trial,
        param_space={"lr": 0.1},
        run_config=tune.RunConfig(name="train-sweep", storage_path=storage, callbacks=[callback], verbose=0),
    ).fit()
    _, (run,) = sweep_runs(runtel.Store(base_dir), "train-sweep")
    assert run.status == "completed"
    assert run.history("loss")[2].tolist() == [1.0, 0.5]
    versions = ArtifactStore(run.dir).versions("checkpoint")
    assert [(Path(v.path) / "weights.txt").read_text() for v in versions] == ["epoch 0", "epoch 1"]
