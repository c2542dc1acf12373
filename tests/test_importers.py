"""Importing from TensorBoard, MLflow, W&B offline and Neptune offline, with sources written by the
real libraries and every point checked against what each library's own reader returns."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing import event_accumulator as ea

import runtel
from runtel.cli import main
from runtel.exporters.mlflow import MlflowExporter
from runtel.importers import import_runs, import_source
from runtel.replay import export_run
from tests.conftest import run_python
from tests.readers.neptune_offline import offline_runs
from tests.readers.neptune_offline import read_run as read_neptune
from tests.readers.wandb_log import read_finished_log

T0 = 1_700_000_000.0
TB_STEPS = 10_050
WANDB_ROWS = 10_000


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import(source: str, path: Any, base: Path, **options: Any) -> list[runtel.StoredRun]:
    return import_runs(source, path, base_dir=base, **options)


def _adaptations(run: runtel.StoredRun) -> dict[str, Any]:
    adaptations: dict[str, Any] = run.summary()["import"]["adaptations"]
    return adaptations


# ---------------------------------------------------------------------------------------- TensorBoard
_TB_SCRIPT = """
import numpy as np, sys
from torch.utils.tensorboard import SummaryWriter
import tensorboardX
root = sys.argv[1]
rng = np.random.default_rng(3)
writers = (("torch", SummaryWriter(root + "/torch")), ("tbx", tensorboardX.SummaryWriter(root + "/tbx")))
for name, writer in writers:
    for step in range({steps}):
        writer.add_scalar("train/loss", 1.0 / (step + 1) + rng.random(), step, walltime={t0} + step * 0.01)
    writer.add_histogram("weights", rng.standard_normal(1000), 5, walltime={t0} + 1)
    writer.add_image("sample", rng.random((3, 8, 8)), 7, walltime={t0} + 2)
    writer.add_text("note", "hello " + name, 1, walltime={t0} + 3)
    writer.add_hparams({{"lr": 0.1, "optimizer": "adam"}}, {{"hp/accuracy": 0.9}})
    writer.close()
"""


@pytest.fixture(scope="module")
def tb_logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tb")
    subprocess.run(
        [sys.executable, "-c", _TB_SCRIPT.format(steps=TB_STEPS, t0=T0), str(root / "logs")],
        check=True,
        capture_output=True,
    )
    return root / "logs"


@pytest.fixture(scope="module")
def tb_store(tb_logdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tb-store")
    _import("tensorboard", tb_logdir, base)
    return base


def _accumulator(folder: Path) -> ea.EventAccumulator:
    everything = {kind: 0 for kind in (ea.SCALARS, ea.HISTOGRAMS, ea.IMAGES, ea.TENSORS)}
    accumulator = ea.EventAccumulator(str(folder), size_guidance=everything, purge_orphaned_data=False)
    accumulator.Reload()
    return accumulator


@pytest.mark.parametrize("writer", ["torch", "tbx"])
def test_tensorboard_every_point_equals_tensorboards_reader(
    tb_logdir: Path, tb_store: Path, writer: str
) -> None:
    run = runtel.Store(tb_store).run(writer)
    events = _accumulator(tb_logdir / writer).Scalars("train/loss")
    steps, times, values = run.history("train/loss")
    assert len(events) == TB_STEPS
    np.testing.assert_array_equal(steps, [e.step for e in events])
    np.testing.assert_array_equal(times, [e.wall_time for e in events])
    np.testing.assert_array_equal(values, [e.value for e in events])
    assert run.metadata["imported_from"] == "tensorboard"
    assert run.metadata["import"]["source_path"] == str(tb_logdir / writer)
    assert _adaptations(run)["source_float32"]["count"] == TB_STEPS


@pytest.mark.parametrize("writer", ["torch", "tbx"])
def test_tensorboard_histograms_images_text_and_hparams(tb_logdir: Path, tb_store: Path, writer: str) -> None:
    store = runtel.Store(tb_store)
    run = store.run(writer)
    accumulator = _accumulator(tb_logdir / writer)
    (source,) = accumulator.Histograms("weights")
    (histogram,) = [r for r in run.events() if type(r).__name__ == "HistogramLogged"]
    assert (histogram.step, histogram.time) == (source.step, source.wall_time)
    np.testing.assert_array_equal(histogram.counts, source.histogram_value.bucket)
    np.testing.assert_array_equal(histogram.bin_edges[1:], source.histogram_value.bucket_limit)
    assert (histogram.min, histogram.max) == (source.histogram_value.min, source.histogram_value.max)
    (image,) = accumulator.Images("sample")
    (figure,) = [r for r in run.events() if type(r).__name__ == "FigureLogged"]
    assert figure.step == image.step == 7
    assert Path(figure.path).read_bytes() == image.encoded_image_string
    text = _adaptations(run)["text_skipped"]
    assert text["count"] == 1 and text["examples"][0]["text"] == f"hello {writer}"
    (hparams,) = [r for r in store.runs() if r.name.startswith(f"{writer}/")]
    assert hparams.params() == {"lr": 0.1, "optimizer": "adam"}
    assert hparams.history("hp/accuracy")[2].tolist() == pytest.approx([0.9])


def test_tensorboard_steps_that_go_back_are_all_kept(tmp_path: Path) -> None:
    """A restarted job logs steps 50.. again; TensorBoard's UI purges the "orphaned" first 50..99, the
    import keeps every event the file holds, in file order."""
    import tensorboardX
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    writer = tensorboardX.SummaryWriter(str(tmp_path / "logs" / "resumed"))
    for step in range(100):
        writer.add_scalar("loss", float(step), step, walltime=T0 + step)
    restart = Event(wall_time=T0 + 200, step=50, session_log=SessionLog(status=SessionLog.START))
    writer._get_file_writer().add_event(restart)  # what a restarted TensorFlow job writes
    for step in range(50, 150):
        writer.add_scalar("loss", float(step) + 0.5, step, walltime=T0 + 200 + step)
    writer.close()
    (events_file,) = (tmp_path / "logs" / "resumed").glob("*tfevents*")
    raw = [
        (event.step, event.wall_time, value.simple_value)
        for event in LegacyEventFileLoader(str(events_file)).Load()
        for value in event.summary.value  # the events as written (simple_value), not upgraded to tensors
    ]
    (run,) = _import("tensorboard", tmp_path / "logs", tmp_path / "store")
    steps, times, values = run.history("loss")
    assert len(raw) == 200
    assert list(zip(steps.tolist(), times.tolist(), values.tolist(), strict=True)) == raw


def test_tensorboard_reimport_creates_nothing_and_force_replaces(tb_logdir: Path, tmp_path: Path) -> None:
    base = tmp_path / "store"
    first = import_source("tensorboard", str(tb_logdir / "tbx"), base_dir=base)
    again = import_source("tensorboard", str(tb_logdir / "tbx"), base_dir=base)
    forced = import_source("tensorboard", str(tb_logdir / "tbx"), base_dir=base, force=True)
    assert [o.status for o in first] == ["imported", "imported"]
    assert [o.status for o in again] == ["unchanged", "unchanged"]
    assert [o.status for o in forced] == ["replaced", "replaced"]
    assert len(runtel.Store(base).runs()) == 2
    assert runtel.Store(base).run("tbx").history("train/loss")[0].size == TB_STEPS


def test_interrupted_import_is_marked_partial_and_completed_next_time(
    tb_logdir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "store"

    class Interrupt:
        def started(self, name: str, points: int) -> None:
            pass

        def advance(self, points: int) -> None:
            raise KeyboardInterrupt

        def finished(self, outcome: Any) -> None:
            pass

    with pytest.raises(KeyboardInterrupt):
        import_source("tensorboard", str(tb_logdir / "torch"), base_dir=base, listener=Interrupt())
    (partial,) = runtel.Store(base).runs()
    assert partial.metadata["import"]["state"] == "partial"
    outcomes = import_source("tensorboard", str(tb_logdir / "torch"), base_dir=base)
    assert [o.status for o in outcomes] == ["replaced", "imported"]
    run = runtel.Store(base).run("torch")
    assert run.metadata["import"]["state"] == "complete"
    assert run.status == "completed"
    assert run.history("train/loss")[0].size == TB_STEPS


def test_folders_without_runs_are_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (outcome,) = import_source("tensorboard", str(tmp_path / "empty"), base_dir=tmp_path / "store")
    assert outcome.status == "skipped"
    assert "no TensorBoard event files" in str(outcome.reason)


def test_a_mistyped_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "wandb", str(tmp_path / "nope"), "--base-dir", str(tmp_path / "store")]) == 1
    assert "no wandb folder at" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- MLflow
def _log_mlflow(uri: str, artifact_root: Path, source: Path) -> dict[str, str]:
    """Two runs logged with mlflow itself: a finished one (metrics, params, tags, artifacts), a failed one."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("imports", artifact_location=artifact_root.as_uri())
    good = client.create_run(experiment, run_name="good", tags={"team": "vision"})
    run_id = good.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("loss", 1.0 / (i + 1), int(T0 * 1000) + 7 * i, i) for i in range(2000)]
        + [Metric("acc", math.nan if i == 3 else i / 10, int(T0 * 1000) + i, 10 * i) for i in range(50)],
        params=[],
    )
    client.log_param(run_id, "lr", "0.001")
    client.log_param(run_id, "layers", "[64, 32]")
    client.set_tag(run_id, "mlflow.note.content", "the baseline")
    client.log_artifact(run_id, str(source), "checkpoints")
    model = client.create_logged_model(experiment, name="net", source_run_id=run_id)
    client.log_model_artifact(model.model_id, str(source))
    client.finalize_logged_model(model.model_id, "READY")
    client.set_terminated(run_id, "FINISHED")
    bad = client.create_run(experiment, run_name="bad")
    client.log_metric(bad.info.run_id, "loss", 2.5, timestamp=int(T0 * 1000), step=0)
    client.set_terminated(bad.info.run_id, "FAILED")
    return {"good": run_id, "bad": bad.info.run_id}


@pytest.fixture(scope="module")
def mlflow_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str], Path]:
    root = tmp_path_factory.mktemp("mlflow")
    source = root / "model.bin"
    source.write_bytes(os.urandom(2048))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, _log_mlflow(uri, root / "artifacts", source), source


def _assert_mlflow_run_equal(uri: str, run_id: str, run: runtel.StoredRun) -> None:
    client = MlflowClient(uri)
    source = client.get_run(run_id)
    assert run.params() == source.data.params
    assert sorted(run.metrics()) == sorted(source.data.metrics)
    for key in source.data.metrics:
        history = client.get_metric_history(run_id, key)
        steps, times, values = run.history(key)
        np.testing.assert_array_equal(steps, [m.step for m in history])
        np.testing.assert_array_equal(times, [m.timestamp / 1000 for m in history])
        np.testing.assert_array_equal(values, [m.value for m in history])
    assert run.metadata["import"]["source_metadata"]["run_id"] == run_id


def test_mlflow_sqlite_imports_exactly_and_reimport_adds_nothing(
    mlflow_source: tuple[str, dict[str, str], Path], tmp_path: Path
) -> None:
    uri, ids, artifact = mlflow_source
    runs = _import("mlflow", None, tmp_path / "store", tracking_uri=uri)
    by_name = {run.name: run for run in runs}
    _assert_mlflow_run_equal(uri, ids["good"], by_name["good"])
    _assert_mlflow_run_equal(uri, ids["bad"], by_name["bad"])
    good = by_name["good"]
    assert good.status == "completed" and by_name["bad"].status == "failed"
    assert good.metadata["notes"] == "the baseline"
    assert good.metadata["tags"] == ["team=vision"]
    (stored,) = json.loads((good.dir / "artifacts.json").read_text())["artifacts"]["checkpoints/model.bin"]
    assert stored["checksum"] == _sha256(artifact)
    assert _sha256(good.dir / stored["path"]) == _sha256(artifact)
    (model,) = json.loads((good.dir / "artifacts.json").read_text())["artifacts"]["models/net"]
    assert model["kind"] == "model" and model["metadata"]["status"] == "READY"
    assert _sha256(good.dir / model["path"] / "model.bin") == _sha256(artifact)
    assert _adaptations(good)["source_time_milliseconds"]["count"] == 2050
    again = import_source("mlflow", None, base_dir=tmp_path / "store", options={"tracking_uri": uri})
    assert {o.status for o in again} == {"unchanged"}
    assert len(runtel.Store(tmp_path / "store").runs()) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.slow
def test_mlflow_server_imports_exactly(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "served"), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                MlflowClient(uri).search_experiments()
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        artifact = tmp_path / "model.bin"
        artifact.write_bytes(os.urandom(512))
        ids = _log_mlflow(uri, tmp_path / "unused", artifact)
        runs = {run.name: run for run in _import("mlflow", None, tmp_path / "store", tracking_uri=uri)}
        _assert_mlflow_run_equal(uri, ids["good"], runs["good"])
        assert runs["bad"].status == "failed"
        stored = json.loads((runs["good"].dir / "artifacts.json").read_text())["artifacts"]
        assert _sha256(runs["good"].dir / stored["models/net"][0]["path"] / "model.bin") == _sha256(artifact)
        again = import_source("mlflow", None, base_dir=tmp_path / "store", options={"tracking_uri": uri})
        assert {o.status for o in again} == {"unchanged"}
    finally:
        server.terminate()
        server.wait(30)


# ------------------------------------------------------------------------------------------ W&B offline
_WANDB_SCRIPT = """
import os, numpy as np, wandb
run = wandb.init(project="migrate", name="wandb-run", mode="offline", dir=os.getcwd(), notes="from wandb",
                 tags=["a", "b"], config={{"lr": 0.01, "model": {{"depth": 4}}}})
for step in range({rows}):
    row = {{"loss": 1.0 / (step + 1), "acc": float("nan") if step == 5 else step / {rows}}}
    if step == 10:
        row["weights"] = wandb.Histogram(np.arange(100.0))
        row["sample"] = wandb.Image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    run.log(row, step=step)
with open("notes.txt", "w") as handle:
    handle.write("a file saved with the run")
run.save("notes.txt", policy="now")
run.summary["best_acc"] = 0.99
print(run.id)
run.finish()
"""


@pytest.fixture(scope="module")
def wandb_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("wandb")
    run_id = run_python(_WANDB_SCRIPT.format(rows=WANDB_ROWS), root, {"WANDB_SILENT": "true"}).split()[-1]
    read_finished_log(root, run_id)  # waits until wandb-core closed the log
    return root, run_id


@pytest.fixture(scope="module")
def wandb_run(wandb_source: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> runtel.StoredRun:
    (run,) = _import("wandb", wandb_source[0] / "wandb", tmp_path_factory.mktemp("wandb-store"))
    return run


def test_wandb_offline_run_imports_exactly(
    wandb_source: tuple[Path, str], wandb_run: runtel.StoredRun
) -> None:
    root, run_id = wandb_source
    log = read_finished_log(root, run_id)
    run = wandb_run
    assert len(log.history) == WANDB_ROWS
    for key in ("loss", "acc"):
        steps, times, values = run.history(key)
        rows = [log.history[step] for step in sorted(log.history)]
        np.testing.assert_array_equal(steps, sorted(log.history))
        np.testing.assert_array_equal(times, [row["_timestamp"] for row in rows])
        np.testing.assert_array_equal(values, [row[key] for row in rows])
    assert math.isnan(run.history("acc")[2][5])
    assert run.params() == {"lr": 0.01, "model": {"depth": 4}}
    assert run.summary()["source_summary"]["best_acc"] == 0.99
    assert (run.name, run.project, run.status) == ("wandb-run", "migrate", "completed")
    assert run.metadata["notes"] == "from wandb" and run.metadata["tags"] == ["a", "b"]
    (saved,) = json.loads((run.dir / "artifacts.json").read_text())["artifacts"]["notes.txt"]
    assert saved["checksum"] == _sha256(root / "notes.txt")
    assert "step_missing" not in _adaptations(run)
    (histogram,) = [r for r in run.events() if type(r).__name__ == "HistogramLogged"]
    assert (histogram.name, histogram.step) == ("weights", 10)
    np.testing.assert_array_equal(histogram.bin_edges, log.history[10]["weights/bins"])
    np.testing.assert_array_equal(histogram.counts, log.history[10]["weights/values"])
    (figure,) = [r for r in run.events() if type(r).__name__ == "FigureLogged"]
    assert (figure.name, figure.step) == ("sample", 10)
    media = next(root.glob(f"wandb/offline-run-*-{run_id}/files/{log.history[10]['sample/path']}"))
    assert Path(figure.path).read_bytes() == media.read_bytes()
    assert not [name for name in run.metrics() if name.startswith(("weights", "sample"))]


def test_a_damaged_wandb_log_fails_alone(wandb_source: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = wandb_source
    foreign = tmp_path / "wandb" / "offline-run-20200101_000000-deadbeef"
    foreign.mkdir(parents=True)
    (foreign / "run-deadbeef.wandb").write_bytes(b"not a transaction log")
    (tmp_path / "wandb" / "offline-run-20200101_000000-empty").mkdir()
    for source in (root / "wandb").iterdir():
        if source.name.startswith("offline-run-"):
            os.symlink(source, tmp_path / "wandb" / source.name)
    outcomes = {
        Path(o.source_path).name: o
        for o in import_source("wandb", str(tmp_path / "wandb"), base_dir=tmp_path / "s")
    }
    assert outcomes["offline-run-20200101_000000-deadbeef"].status == "failed"
    assert "not a W&B transaction log" in str(outcomes["offline-run-20200101_000000-deadbeef"].reason)
    assert outcomes["offline-run-20200101_000000-empty"].status == "skipped"
    assert sorted(o.status for o in outcomes.values()) == ["failed", "imported", "skipped"]
    assert len(runtel.Store(tmp_path / "s").runs()) == 1


# -------------------------------------------------------------------------------------- Neptune offline
_NEPTUNE_SCRIPT = """
import neptune
run = neptune.init_run(mode="offline", name="neptune-run", description="from neptune", tags=["n1"])
run["parameters"] = {"lr": 0.5, "optimizer": "sgd", "layers": 3}
for step in range(3000):
    run["train/loss"].append(1.0 / (step + 1), step=step, timestamp=1700000000.0 + step)
with open("weights.bin", "wb") as handle:
    handle.write(bytes(range(256)) * 8)
run["model/weights"].upload("weights.bin")
run.stop()
"""


@pytest.fixture(scope="module")
def neptune_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("neptune")
    run_python(_NEPTUNE_SCRIPT, root)
    return root


@pytest.fixture(scope="module")
def neptune_run(neptune_source: Path, tmp_path_factory: pytest.TempPathFactory) -> runtel.StoredRun:
    (run,) = _import("neptune", neptune_source / ".neptune", tmp_path_factory.mktemp("neptune-store"))
    return run


def test_neptune_offline_run_imports_exactly(neptune_source: Path, neptune_run: runtel.StoredRun) -> None:
    (folder,) = offline_runs(neptune_source / ".neptune")
    source = read_neptune(folder)
    run = neptune_run
    steps, times, values = run.history("train/loss")
    points = source.series["train/loss"]
    assert len(points) == 3000
    np.testing.assert_array_equal(steps, [p[0] for p in points])
    np.testing.assert_array_equal(values, [p[1] for p in points])
    np.testing.assert_array_equal(times, [p[2] for p in points])
    assert run.params() == {"lr": 0.5, "optimizer": "sgd", "layers": 3}
    assert (run.name, run.metadata["notes"], run.metadata["tags"]) == ("neptune-run", "from neptune", ["n1"])
    (weights,) = json.loads((run.dir / "artifacts.json").read_text())["artifacts"]["model/weights.bin"]
    assert weights["checksum"] == _sha256(neptune_source / "weights.bin")
    monitoring = {
        path: found
        for path, found in source.series.items()
        if path.startswith("monitoring/") and not any(isinstance(point[1], str) for point in found)
    }  # its console (stdout/stderr string series) is reported as skipped, not imported as numbers
    assert monitoring  # neptune samples the system while the run is open
    for path, found in monitoring.items():
        steps, times, values = run.history("system/" + path.split("/", 2)[2])
        np.testing.assert_array_equal(values, [p[1] for p in found])
        np.testing.assert_array_equal(times, [p[2] for p in found])


# ---------------------------------------------------------------------- round trip: source → store → MLflow
def _round_trip(run: runtel.StoredRun, tmp_path: Path) -> tuple[MlflowClient, str, dict[str, Any]]:
    uri = f"sqlite:///{tmp_path / 'target.db'}"
    result = export_run(run, MlflowExporter(tracking_uri=uri, experiment_name="target"))
    client = MlflowClient(uri)
    (target,) = client.search_runs([client.get_experiment_by_name("target").experiment_id])
    return client, target.info.run_id, result["adaptations"]


def _assert_round_trip(
    run: runtel.StoredRun, tmp_path: Path, source: dict[str, tuple[Any, Any, Any]]
) -> None:
    """Steps and values equal to the source's; times equal to the millisecond MLflow keeps."""
    client, run_id, _ = _round_trip(run, tmp_path)
    for key, (steps, times, values) in source.items():
        history = client.get_metric_history(run_id, key)
        np.testing.assert_array_equal([m.step for m in history], steps)
        np.testing.assert_array_equal([m.value for m in history], values)
        np.testing.assert_array_equal([m.timestamp for m in history], np.round(np.asarray(times) * 1000))


def test_round_trip_tensorboard_to_mlflow(tb_logdir: Path, tb_store: Path, tmp_path: Path) -> None:
    events = _accumulator(tb_logdir / "tbx").Scalars("train/loss")
    source = {
        "train/loss": ([e.step for e in events], [e.wall_time for e in events], [e.value for e in events])
    }
    _assert_round_trip(runtel.Store(tb_store).run("tbx"), tmp_path, source)


def test_round_trip_mlflow_to_mlflow(mlflow_source: tuple[str, dict[str, str], Path], tmp_path: Path) -> None:
    uri, ids, _ = mlflow_source
    (run,) = _import("mlflow", None, tmp_path / "store", tracking_uri=uri, run_id=ids["good"])
    client = MlflowClient(uri)
    source = {}
    for key in ("loss", "acc"):
        history = client.get_metric_history(ids["good"], key)
        source[key] = (
            [m.step for m in history],
            [m.timestamp / 1000 for m in history],
            [m.value for m in history],
        )
    _assert_round_trip(run, tmp_path, source)


@pytest.mark.slow  # 20,000 points through MLflow's SQLite store: about 20 s here
def test_round_trip_wandb_to_mlflow(
    wandb_source: tuple[Path, str], wandb_run: runtel.StoredRun, tmp_path: Path
) -> None:
    root, run_id = wandb_source
    log = read_finished_log(root, run_id)
    run = wandb_run
    rows = [log.history[step] for step in sorted(log.history)]
    source = {"loss": (sorted(log.history), [r["_timestamp"] for r in rows], [r["loss"] for r in rows])}
    _assert_round_trip(run, tmp_path, source)


def test_round_trip_neptune_to_mlflow(
    neptune_source: Path, neptune_run: runtel.StoredRun, tmp_path: Path
) -> None:
    (folder,) = offline_runs(neptune_source / ".neptune")
    points = read_neptune(folder).series["train/loss"]
    run = neptune_run
    source = {"train/loss": ([p[0] for p in points], [p[2] for p in points], [p[1] for p in points])}
    _assert_round_trip(run, tmp_path, source)


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_imports_reports_json_and_exports_imported_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tensorboardX

    for name in ("first", "second"):
        writer = tensorboardX.SummaryWriter(str(tmp_path / "logs" / name))
        for step in range(20):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.close()
    base = str(tmp_path / "store")
    assert main(["import", "tensorboard", str(tmp_path / "logs"), "--base-dir", base, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert sorted(run["status"] for run in document["runs"]) == ["imported", "imported"]
    assert main(["show", "first", "--base-dir", base, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["adaptations"]["tensorboard import"]["source_float32"]["count"] == 20
    target = f"sqlite:///{tmp_path / 'out.db'}"
    code = main(["export", "--imported-from", "tensorboard", "--to", "mlflow", "--tracking-uri", target,
                 "--base-dir", base, "--json"])  # fmt: skip
    assert code == 0
    exported = json.loads(capsys.readouterr().out)["runs"]
    assert len(exported) == 2 and all(item["error"] is None for item in exported)
    assert main(["export", "--imported-from", "wandb", "--to", "mlflow", "--base-dir", base]) == 1


@pytest.mark.parametrize(
    ("source", "module", "extra"),
    [
        ("tensorboard", "tensorboard.backend.event_processing.event_accumulator", "runtel[tensorboard]"),
        ("wandb", "wandb.proto.wandb_internal_pb2", "runtel[wandb]"),
        ("neptune", "neptune.internal.operation", "runtel[neptune]"),
        ("mlflow", "mlflow.tracking", "runtel[mlflow]"),
    ],
)
def test_a_missing_extra_is_named(
    source: str, module: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an interpreter without the package does
    with pytest.raises(runtel.MissingExtraError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        import_runs(
            source,
            tmp_path,
            base_dir=tmp_path / "store",
            **({"tracking_uri": "x"} if source == "mlflow" else {}),
        )


def test_a_source_damaged_since_keeps_the_earlier_import(
    wandb_source: tuple[Path, str], tmp_path: Path
) -> None:
    root, run_id = wandb_source
    (folder,) = (root / "wandb").glob(f"offline-run-*-{run_id}")
    copy = tmp_path / "wandb" / folder.name
    shutil.copytree(folder, copy, symlinks=True)
    import_runs("wandb", tmp_path / "wandb", base_dir=tmp_path / "store")
    (copy / f"run-{run_id}.wandb").write_bytes(b"damaged")
    (outcome,) = import_source("wandb", str(tmp_path / "wandb"), base_dir=tmp_path / "store", force=True)
    assert outcome.status == "failed" and "not a W&B transaction log" in str(outcome.reason)
    (run,) = runtel.Store(tmp_path / "store").runs()
    assert run.history("loss")[0].size == WANDB_ROWS
