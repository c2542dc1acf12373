"""Hugging Face transformers: a real Trainer on CPU with RuntelCallback, a tiny BERT built in the test."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may be downloaded

import torch
from mlflow.tracking import MlflowClient
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerState,
    TrainingArguments,
)

import runtel
from runtel.integrations.huggingface import RuntelCallback
from runtel.store.artifacts import ArtifactStore
from tests import launch
from tests.conftest import run_python

EPOCHS, SAMPLES, BATCH = 2, 16, 4


class TinyTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random token ids and labels, fixed by a seed."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (SAMPLES, 8), generator=generator)
        self.labels = torch.randint(0, 2, (SAMPLES,), generator=generator)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def train(tmp: Path, callback: RuntelCallback, **arguments: object) -> Trainer:
    """A tiny BERT trained two epochs with ``callback``; ``arguments`` override TrainingArguments."""
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    args = TrainingArguments(
        **{
            "output_dir": str(tmp / "out"),
            "num_train_epochs": EPOCHS,
            "per_device_train_batch_size": BATCH,
            "logging_steps": 1,
            "report_to": [],
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
            **arguments,
        }
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=TinyTokens(),
        callbacks=[callback],
    )
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RuntelCallback, TrainerState]:
    """One two-epoch training shared by the tests that read it back."""
    tmp = tmp_path_factory.mktemp("hf")
    callback = RuntelCallback(project="hf", name="tiny-bert", base_dir=str(tmp / "runs"), system_interval=0)
    return tmp / "runs", callback, train(tmp, callback).state


def test_one_run(trained: tuple[Path, RuntelCallback, TrainerState]) -> None:
    base_dir, callback, _ = trained
    assert callback.run is not None
    assert [run.id for run in runtel.Store(base_dir).runs()] == [callback.run.id]


def test_every_loss_read_back_at_its_global_step(trained: tuple[Path, RuntelCallback, TrainerState]) -> None:
    base_dir, callback, state = trained
    assert callback.run is not None
    expected = [(entry["step"], entry["loss"]) for entry in state.log_history if "loss" in entry]
    assert len(expected) == EPOCHS * SAMPLES // BATCH
    steps, _, values = runtel.Store(base_dir).run(callback.run.id).history("loss")
    assert list(zip(steps.tolist(), values.tolist(), strict=True)) == expected


def test_epochs_are_spans(trained: tuple[Path, RuntelCallback, TrainerState]) -> None:
    base_dir, callback, _ = trained
    assert callback.run is not None
    spans = [s for s in runtel.Store(base_dir).run(callback.run.id).spans() if s.kind == "epoch"]
    assert [(s.name, s.attributes["epoch"]) for s in spans] == [("epoch 0", 0), ("epoch 1", 1)]


def test_params_hold_arguments_and_model_config(trained: tuple[Path, RuntelCallback, TrainerState]) -> None:
    base_dir, callback, _ = trained
    assert callback.run is not None
    params = runtel.Store(base_dir).run(callback.run.id).params()
    assert params["learning_rate"] == 5e-5
    assert params["num_train_epochs"] == EPOCHS
    assert params["model_config"]["hidden_size"] == 16
    assert params["model_config"]["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}


def test_status_completed(trained: tuple[Path, RuntelCallback, TrainerState]) -> None:
    base_dir, callback, _ = trained
    assert callback.run is not None
    assert runtel.Store(base_dir).run(callback.run.id).status == "completed"


def test_optimizer_steps_timed(trained: tuple[Path, RuntelCallback, TrainerState]) -> None:
    base_dir, callback, state = trained
    assert callback.run is not None
    stored = runtel.Store(base_dir).run(callback.run.id)
    assert stored.history("timing/step_seconds/count")[2].sum() == state.global_step
    assert stored.history("timing/samples_per_second")[2].size >= 1


def test_checkpoints_logged_as_model_versions_when_asked(tmp_path: Path) -> None:
    callback = RuntelCallback(
        project="hf", base_dir=str(tmp_path / "runs"), system_interval=0, log_checkpoints=True
    )
    state = train(tmp_path, callback, save_strategy="epoch").state
    assert callback.run is not None
    versions = ArtifactStore(runtel.Store(tmp_path / "runs").run(callback.run.id).dir).versions("checkpoint")
    per_epoch = SAMPLES // BATCH
    assert [(v.version, v.step, v.kind) for v in versions] == [
        (1, per_epoch, "model"),
        (2, 2 * per_epoch, "model"),
    ]
    assert state.global_step == 2 * per_epoch


def test_evaluate_after_training_goes_to_the_run_kept_open(tmp_path: Path) -> None:
    callback = RuntelCallback(base_dir=str(tmp_path / "runs"), system_interval=0, finish_at_train_end=False)
    trainer = train(tmp_path, callback)
    metrics = trainer.evaluate(TinyTokens())
    assert callback.run is not None
    callback.run.finish()

    stored = runtel.Store(tmp_path / "runs").run(callback.run.id)
    assert stored.history("eval_loss")[2].tolist() == [metrics["eval_loss"]]
    assert stored.status == "completed"


def test_evaluate_after_a_finished_run_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    callback = RuntelCallback(base_dir=str(tmp_path / "runs"), system_interval=0)
    trainer = train(tmp_path, callback)
    trainer.evaluate(TinyTokens())
    assert callback.run is not None
    assert "eval_loss" not in runtel.Store(tmp_path / "runs").run(callback.run.id).metrics()
    assert "finish_at_train_end=False" in caplog.text


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from runtel.integrations.huggingface import RuntelCallback
    from tests.test_integration_transformers import train

    out = Path(sys.argv[1])
    for mode in ("rank-zero", "all-ranks"):
        callback = RuntelCallback(
            project="hf", base_dir=str(out / mode), system_interval=0,
            exporters=["mlflow"], exporter_options={"mlflow": {"tracking_uri": f"sqlite:///{out / mode}.db"}},
            **({"log_all_ranks": True} if mode == "all-ranks" else {}),
        )
        trainer = train(out, callback)
        rank = trainer.args.process_index
        (out / f"{mode}-{rank}.json").write_text(json.dumps(trainer.state.log_history))
    """
)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trainings in one 2-process torchrun job (gloo, CPU): world process zero only, then all."""
    out = tmp_path_factory.mktemp("hf-ddp")
    script = out / "train.py"
    script.write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTEL_")}
    result = launch.torchrun(
        script, str(out), cwd=out, env={**env, "PYTHONPATH": str(Path(__file__).parents[1])}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def logged_losses(log_file: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training log a rank's ``state.log_history`` holds."""
    return [(entry["step"], entry["loss"]) for entry in json.loads(log_file.read_text()) if "loss" in entry]


def mlflow_run_ids(db: Path) -> list[str]:
    """The runtel run ids of every MLflow run in the ``hf`` experiment of ``db``."""
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("hf").experiment_id])
    return [mlrun.data.tags["runtel.run_id"] for mlrun in runs]


@pytest.mark.slow  # the ddp fixture: 62 s measured (two torchrun ranks)
def test_ddp_by_default_only_world_process_zero_records(ddp: Path) -> None:
    (run,) = runtel.Store(ddp / "rank-zero").runs()
    assert run.ranks() == {0: "completed"}
    assert not (run.dir / "ranks").exists()
    steps, _, values = run.history("loss")
    assert list(zip(steps.tolist(), values.tolist(), strict=True)) == logged_losses(ddp / "rank-zero-0.json")
    assert mlflow_run_ids(ddp / "rank-zero.db") == [run.id]


@pytest.mark.slow  # the ddp fixture: 62 s measured (two torchrun ranks)
def test_ddp_all_ranks_record_into_the_one_run(ddp: Path) -> None:
    (run,) = runtel.Store(ddp / "all-ranks").runs()
    assert run.ranks() == {0: "completed", 1: "completed"}
    for rank in (0, 1):
        steps, _, values = run.history("loss", rank=rank)
        expected = logged_losses(ddp / f"all-ranks-{rank}.json")
        assert list(zip(steps.tolist(), values.tolist(), strict=True)) == expected
        assert len(expected) == EPOCHS * SAMPLES // BATCH // 2
    epochs = sorted((s.name, s.attributes["runtel.rank"]) for s in run.spans() if s.kind == "epoch")
    assert epochs == [("epoch 0", 0), ("epoch 0", 1), ("epoch 1", 0), ("epoch 1", 1)]
    assert mlflow_run_ids(ddp / "all-ranks.db") == [run.id]


def test_import_without_transformers_names_the_extra(tmp_path: Path) -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['transformers'] = None  # as if transformers were not installed\n"
        "try:\n"
        "    import runtel.integrations.huggingface\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n",
        cwd=tmp_path,
    )
    assert out.startswith("MissingExtraError") and "pip install runtel[transformers]" in out
