"""PyTorch Lightning: a real Trainer on CPU with RuntelLogger and RuntelCallback, read back from the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

import runtel
from runtel.integrations.lightning import RuntelCallback, RuntelLogger
from tests.conftest import run_python

EPOCHS, SAMPLES, BATCH = 2, 32, 8


class TinyRegressor(LightningModule):
    """One linear layer; remembers every loss it logs, as the value Lightning hands the logger."""

    def __init__(self, lr: float = 0.05, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(hidden, 1)
        self.logged: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        features, target = batch
        loss = torch.nn.functional.mse_loss(self.layer(features), target)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        self.logged.append(loss.item())
        return loss

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        features, target = batch
        self.log("test/loss", torch.nn.functional.mse_loss(self.layer(features), target))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        return self.train_dataloader()

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        generator = torch.Generator().manual_seed(0)
        features = torch.randn(SAMPLES, 4, generator=generator)
        return DataLoader(TensorDataset(features, features.sum(1, keepdim=True)), batch_size=BATCH)


def make_trainer(logger: RuntelLogger, **options: Any) -> Trainer:
    """A quiet CPU trainer for EPOCHS epochs with a RuntelCallback; ``options`` override its arguments."""
    arguments: dict[str, Any] = {
        "max_epochs": EPOCHS,
        "accelerator": "cpu",
        "logger": logger,
        "callbacks": [RuntelCallback(batch_size=BATCH)],
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
    }
    return Trainer(**{**arguments, **options})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RuntelLogger, TinyRegressor]:
    """One two-epoch fit shared by the tests that read it back."""
    base_dir = tmp_path_factory.mktemp("lightning") / "runs"
    logger = RuntelLogger(project="lit", name="tiny", base_dir=str(base_dir), system_interval=0)
    model = TinyRegressor()
    make_trainer(logger).fit(model)
    return base_dir, logger, model


def test_one_run_named_after_the_logger(fitted: tuple[Path, RuntelLogger, TinyRegressor]) -> None:
    base_dir, logger, _ = fitted
    runs = runtel.Store(base_dir).runs()
    assert [run.id for run in runs] == [logger.version]
    assert runs[0].name == logger.name == "tiny"
    assert logger.log_dir == str(runs[0].dir)


def test_logged_metrics_read_back_exactly(fitted: tuple[Path, RuntelLogger, TinyRegressor]) -> None:
    base_dir, logger, model = fitted
    stored = runtel.Store(base_dir).run(logger.version)
    steps, _, values = stored.history("train/loss")
    assert values.tolist() == model.logged
    assert steps.tolist() == list(range(EPOCHS * SAMPLES // BATCH))
    _, _, epochs = stored.history("epoch")
    assert epochs.tolist() == [0.0] * 4 + [1.0] * 4


def test_epochs_are_spans(fitted: tuple[Path, RuntelLogger, TinyRegressor]) -> None:
    base_dir, logger, _ = fitted
    spans = [s for s in runtel.Store(base_dir).run(logger.version).spans() if s.kind == "epoch"]
    assert [(s.name, s.attributes["epoch"]) for s in spans] == [("epoch 0", 0), ("epoch 1", 1)]


def test_hyperparameters_stored(fitted: tuple[Path, RuntelLogger, TinyRegressor]) -> None:
    base_dir, logger, _ = fitted
    assert runtel.Store(base_dir).run(logger.version).params() == {"lr": 0.05, "hidden": 4}


def test_status_completed(fitted: tuple[Path, RuntelLogger, TinyRegressor]) -> None:
    base_dir, logger, _ = fitted
    assert runtel.Store(base_dir).run(logger.version).status == "completed"


def test_training_batches_timed(fitted: tuple[Path, RuntelLogger, TinyRegressor]) -> None:
    base_dir, logger, _ = fitted
    stored = runtel.Store(base_dir).run(logger.version)
    assert stored.history("timing/step_seconds/count")[2].sum() == EPOCHS * SAMPLES // BATCH
    rates = stored.history("timing/samples_per_second")[2]
    assert rates.size >= 1 and np.all(rates > 0)


def test_testing_after_fit_records_a_second_run(tmp_path: Path) -> None:
    logger = RuntelLogger(
        project="lit", name="fit-then-test", base_dir=str(tmp_path / "runs"), system_interval=0
    )
    trainer = make_trainer(logger)
    model = TinyRegressor()
    trainer.fit(model)
    fit_run = logger.version
    trainer.test(model, verbose=False)

    runs = runtel.Store(tmp_path / "runs").runs()
    assert [run.id for run in runs] == [fit_run, logger.version]
    assert [run.status for run in runs] == ["completed", "completed"]
    assert "test/loss" in runs[1].metrics() and "test/loss" not in runs[0].metrics()
    assert runs[1].params() == {"lr": 0.05, "hidden": 4}


def test_other_ranks_create_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # what Lightning sets on global rank 1
    logger = RuntelLogger(project="lit", base_dir=str(tmp_path / "runs"))
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert logger.version is None
    assert runtel.Store(tmp_path / "runs").runs() == []


def test_logger_alone_warns_once_that_epoch_spans_need_the_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = RuntelLogger(base_dir=str(tmp_path / "runs"), system_interval=0)
    make_trainer(logger, max_epochs=3, callbacks=[]).fit(TinyRegressor())

    warnings = [r.getMessage() for r in caplog.records if "RuntelCallback()" in r.getMessage()]
    assert len(warnings) == 1
    stored = runtel.Store(tmp_path / "runs").run(logger.version)
    assert stored.history("epoch")[2].tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert [s for s in stored.spans() if s.kind == "epoch"] == []


def test_logger_with_the_callback_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_trainer(RuntelLogger(base_dir=str(tmp_path / "runs"), system_interval=0)).fit(TinyRegressor())
    assert "RuntelCallback()" not in caplog.text


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from runtel.integrations.lightning import RuntelLogger
    from tests.test_integration_lightning import TinyRegressor, make_trainer

    out = Path(sys.argv[1])
    for mode in ("rank-zero", "all-ranks"):
        logger = RuntelLogger(
            project="lit", base_dir=str(out / mode), system_interval=0,
            exporters=["mlflow"], exporter_options={"mlflow": {"tracking_uri": f"sqlite:///{out / mode}.db"}},
            **({"log_all_ranks": True} if mode == "all-ranks" else {}),
        )
        model = TinyRegressor()
        make_trainer(logger, devices=2, strategy="ddp").fit(model)
        (out / f"{mode}-{model.global_rank}.json").write_text(json.dumps(model.logged))
    """
)
STEPS_PER_RANK = EPOCHS * SAMPLES // BATCH // 2


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two fits in a 2-process DDP job that Lightning starts itself (gloo, CPU): rank 0 only, then all."""
    out = tmp_path_factory.mktemp("lightning-ddp")
    script = out / "train.py"
    script.write_text(DDP_SCRIPT)
    root = str(Path(__file__).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTEL_")}
    result = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": root},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def mlflow_run_ids(db: Path) -> list[str]:
    """The runtel run ids of every MLflow run in the ``lit`` experiment of ``db``."""
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("lit").experiment_id])
    return [mlrun.data.tags["runtel.run_id"] for mlrun in runs]


@pytest.mark.slow  # the ddp fixture: 78 s measured (two torchrun ranks)
def test_ddp_by_default_only_rank_zero_records(ddp: Path) -> None:
    (run,) = runtel.Store(ddp / "rank-zero").runs()
    assert run.ranks() == {0: "completed"}
    assert not (run.dir / "ranks").exists()
    steps, _, values = run.history("train/loss")
    assert values.tolist() == json.loads((ddp / "rank-zero-0.json").read_text())
    assert steps.tolist() == list(range(STEPS_PER_RANK))
    assert mlflow_run_ids(ddp / "rank-zero.db") == [run.id]


@pytest.mark.slow  # the ddp fixture: 78 s measured (two torchrun ranks)
def test_ddp_all_ranks_record_into_the_one_run(ddp: Path) -> None:
    (run,) = runtel.Store(ddp / "all-ranks").runs()
    assert run.ranks() == {0: "completed", 1: "completed"}
    for rank in (0, 1):
        steps, _, values = run.history("train/loss", rank=rank)
        assert values.tolist() == json.loads((ddp / f"all-ranks-{rank}.json").read_text())
        assert steps.tolist() == list(range(STEPS_PER_RANK))
    epochs = sorted((s.name, s.attributes["runtel.rank"]) for s in run.spans() if s.kind == "epoch")
    assert epochs == [("epoch 0", 0), ("epoch 0", 1), ("epoch 1", 0), ("epoch 1", 1)]
    assert mlflow_run_ids(ddp / "all-ranks.db") == [run.id]


def test_import_without_lightning_names_the_extra(tmp_path: Path) -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['lightning'] = None  # as if lightning were not installed\n"
        "try:\n"
        "    import runtel.integrations.lightning\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n",
        cwd=tmp_path,
    )
    assert out.startswith("MissingExtraError") and "pip install runtel[lightning]" in out
