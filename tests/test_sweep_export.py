"""``runtel export --sweep`` to W&B (one group), TensorBoard (one folder per trial, HParams) and Neptune
(sweep tags), each read back with the backend's own reader."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import runtel
from runtel.cli import main
from runtel.integrations.optuna import RuntelCallback
from runtel.sweep import sweep_runs
from tests.readers.neptune_offline import offline_runs, read_run
from tests.readers.wandb_log import read_finished_log

TRIALS = 3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    base = tmp_path_factory.mktemp("sweep-export") / "runs"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="exp/sweep", sampler=optuna.samplers.RandomSampler(seed=2))
    with RuntelCallback(project="exp", metric_name="loss", base_dir=str(base), system_interval=0) as cb:
        study.optimize(lambda t: t.suggest_float("lr", 0.0, 1.0), n_trials=TRIALS, callbacks=[cb])
    return base, study


def _export(base: Path, *flags: str) -> None:
    assert main(["export", "--sweep", "exp/sweep", "--base-dir", str(base), *flags]) == 0


def test_wandb_puts_the_sweep_and_its_trials_in_one_group(
    sweep: tuple[Path, optuna.Study], tmp_path: Path
) -> None:
    base, _ = sweep
    _export(base, "--to", "wandb", "--mode", "offline", "--dir", str(tmp_path))
    study_run, trials = sweep_runs(runtel.Store(base), "exp/sweep")
    assert study_run is not None
    for run, job_type in [(study_run, "sweep"), *((trial, "trial") for trial in trials)]:
        log = read_finished_log(tmp_path, run.id)
        assert (log.run.run_group, log.run.job_type) == ("exp/sweep", job_type)


def test_tensorboard_gives_each_trial_a_folder_with_its_hparams(
    sweep: tuple[Path, optuna.Study], tmp_path: Path
) -> None:
    base, study = sweep
    _export(base, "--to", "tensorboard", "--log-dir", str(tmp_path))
    sweep_folder = tmp_path / "exp_sweep"  # the sweep's name made a single folder name
    folders = {path.parent for path in sweep_folder.rglob("events.out.tfevents.*")}
    assert len(folders) == TRIALS
    # a run named "exp/sweep-trial-0" is the folder exp/sweep-trial-0_<id8>, as for any run
    by_name = {str(folder.relative_to(sweep_folder)).rpartition("_")[0]: folder for folder in folders}
    for trial in study.trials:
        accumulator = EventAccumulator(str(by_name[f"exp/sweep-trial-{trial.number}"]))
        accumulator.Reload()
        content = accumulator.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        assert start.session_start_info.hparams["lr"].number_value == trial.params["lr"]
        assert accumulator.Scalars("objective/loss")[0].value == pytest.approx(trial.values[0], rel=1e-6)


def test_neptune_tags_every_run_with_the_sweep(sweep: tuple[Path, optuna.Study], tmp_path: Path) -> None:
    base, _ = sweep
    _export(base, "--to", "neptune", "--data-directory", str(tmp_path))
    study_run, _ = sweep_runs(runtel.Store(base), "exp/sweep")
    assert study_run is not None
    runs = [read_run(directory) for directory in offline_runs(tmp_path)]
    assert len(runs) == TRIALS + 1
    for run in runs:
        assert {f"sweep:{study_run.id}", "sweep:exp/sweep"} <= set(run.tags)
