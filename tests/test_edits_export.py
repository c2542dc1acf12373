"""Edits reach the backends that have tags, notes and names: on ``runtel export`` (W&B offline, MLflow on
SQLite, Neptune offline, each read back with its own reader; TensorBoard, which has none, unchanged)
and live (``run.tags.add`` and a ``runtel tag`` from another process while the run logs)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel
from runtel.cli import main
from runtel.exporters.mlflow import MlflowExporter
from tests.editing import cli, start_logging, wait_for_heartbeat
from tests.readers.neptune_offline import offline_runs, read_run
from tests.readers.wandb_log import read_finished_log

NOTE = "lr sweep, seed 3\nkept for the paper"


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run that logged in its own process while two other processes tagged, noted and renamed it."""
    tmp = tmp_path_factory.mktemp("edited")
    base = tmp / "runs"
    logging = start_logging(base, tmp / "edited")
    cli(base, "tag", logging.run_id, "+baseline", "-draft", "+lr3e-4")
    cli(base, "note", logging.run_id, NOTE)
    cli(base, "rename", logging.run_id[:8], "lr3e-4-s3")
    wait_for_heartbeat(runtel.Store(base), logging.run_id, after=time.time())
    steps = logging.finish()
    return {"base": base, "id": logging.run_id, "steps": steps}


def _export(edited: dict[str, Any], *flags: str) -> None:
    assert main(["export", edited["id"], "--base-dir", str(edited["base"]), *flags]) == 0


def test_wandb_run_has_the_edited_tags_notes_and_name(
    edited: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    _export(edited, "--to", "wandb", "--mode", "offline", "--dir", str(tmp_path))
    log = read_finished_log(tmp_path, edited["id"])
    assert log.run is not None
    assert list(log.run.tags) == ["baseline", "lr3e-4"]
    assert (log.run.notes, log.run.display_name) == (NOTE, "lr3e-4-s3")
    losses = [log.history[step]["train/loss"] for step in range(edited["steps"])]
    np.testing.assert_array_equal(losses, 1.0 / (np.arange(edited["steps"]) + 1))


def test_mlflow_run_has_the_edited_tags_note_and_name(edited: dict[str, Any], tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--tracking-uri", uri, "--experiment-name", "edits"]
    _export(edited, "--to", "mlflow", *flags, "-o", f"artifact_location={tmp_path / 'artifacts'}")
    client = MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("edits").experiment_id])
    tags = found.data.tags
    assert json.loads(tags["runtel.tags"]) == ["baseline", "lr3e-4"]
    assert (tags["mlflow.note.content"], tags["mlflow.runName"], found.info.run_name) == (
        NOTE,
        "lr3e-4-s3",
        "lr3e-4-s3",
    )
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert sorted(metric.step for metric in history) == list(range(edited["steps"]))


def test_neptune_run_has_the_edited_tags_description_and_name(edited: dict[str, Any], tmp_path: Path) -> None:
    _export(edited, "--to", "neptune", "--data-directory", str(tmp_path))
    (directory,) = offline_runs(tmp_path)
    run = read_run(directory)
    assert sorted(run.tags) == ["baseline", "lr3e-4"]  # draft added at start, removed by the edit
    assert (run.fields["sys/description"], run.fields["sys/name"]) == (NOTE, "lr3e-4-s3")
    points = run.series["metrics/train/loss"]
    assert [step for step, _, _ in points] == list(range(edited["steps"]))


def test_live_mlflow_run_gets_its_own_and_other_processes_edits(base_dir: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exporter = MlflowExporter(uri, "live-edits", artifact_location=str(tmp_path / "artifacts"))
    with runtel.init(
        project="p", name="live", base_dir=str(base_dir), tags=["draft"], exporters=[exporter]
    ) as run:
        run.log({"loss": 1.0})
        run.tags.add("baseline")
        run.set_note("set live")
        run.flush(exporters=True)
        client = MlflowClient(uri)
        live = client.get_run(exporter.mlflow_run_id or "").data.tags
        assert json.loads(live["runtel.tags"]) == ["draft", "baseline"]
        assert live["mlflow.note.content"] == "set live"
        cli(base_dir, "tag", run.id, "-draft", "+from-cli")  # another process, while the run is live
    tags = MlflowClient(uri).get_run(exporter.mlflow_run_id or "").data.tags
    assert json.loads(tags["runtel.tags"]) == ["baseline", "from-cli"]
    assert list(runtel.Store(base_dir).run(run.id).tags) == ["baseline", "from-cli"]


def test_a_live_run_renamed_is_renamed_in_the_store_and_in_mlflow_at_once(
    base_dir: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exporter = MlflowExporter(uri, "live-rename", artifact_location=str(tmp_path / "artifacts"))
    with runtel.init(project="p", name="live", base_dir=str(base_dir), exporters=[exporter]) as run:
        run.log({"loss": 1.0})
        run.rename("lr3e-4-s3")
        assert run.name == "lr3e-4-s3"
        run.flush(exporters=True)
        assert MlflowClient(uri).get_run(exporter.mlflow_run_id or "").info.run_name == "lr3e-4-s3"
        assert runtel.Store(base_dir).run("lr3e-4-s3").id == run.id
    stored = runtel.Store(base_dir).run(run.id)
    assert (stored.name, stored.metadata["original_name"]) == ("lr3e-4-s3", "live")


def test_a_backend_without_tags_exports_an_edited_run_as_before(
    edited: dict[str, Any], tmp_path: Path
) -> None:
    _export(edited, "--to", "tensorboard", "--log-dir", str(tmp_path))
    (folder,) = {path.parent for path in tmp_path.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("train/loss")] == list(range(edited["steps"]))


def test_a_tag_too_long_for_wandb_is_left_out_reported_and_the_others_sent(
    base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    long, longer = "s" * 65, "e" * 80
    with runtel.init(project="p", name="tagged", base_dir=str(base_dir), tags=["draft", long]) as run:
        run.log({"loss": 1.0})
    runtel.Store(base_dir).run(run.id).tags.update(add=["baseline", longer], remove=["draft"])
    monkeypatch.setenv("WANDB_SILENT", "true")
    capsys.readouterr()
    flags = ["--to", "wandb", "--mode", "offline", "--dir", str(tmp_path), "--json"]
    assert main(["export", run.id, "--base-dir", str(base_dir), *flags]) == 0
    (outcome,) = json.loads(capsys.readouterr().out)["runs"]
    left_out = outcome["adaptations"]["tags_left_out"]
    assert left_out["count"] == 2 and [e["tag"] for e in left_out["examples"]] == [long, longer]
    log = read_finished_log(tmp_path, run.id)
    assert log.run is not None and list(log.run.tags) == ["baseline"]
    assert list(runtel.Store(base_dir).run(run.id).tags) == [long, "baseline", longer]  # the store keeps all
