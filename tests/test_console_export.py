"""The console log reaches W&B and MLflow as their console log (live and on replay), OTLP as log records."""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import runtel
from runtel._console import STDERR_MARK
from runtel.exporters.mlflow import MlflowExporter
from runtel.exporters.otlp import OtlpExporter
from runtel.exporters.wandb import WandbExporter
from runtel.replay import export_run
from tests.readers.wandb_log import iter_records, read_finished_log
from tests.test_exporter_otlp import Server, http_receiver  # noqa: F401 - the receiver fixture

LINES = [b"epoch 0 loss 0.5\n", b"epoch 1 loss 0.25\n"]


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def printing_run(base_dir: Path, exporters: list[object], *, environment: bool = False) -> runtel.Run:
    """A run that writes two stdout lines and one stderr line at the descriptor level."""
    with runtel.init(
        project="console",
        base_dir=str(base_dir),
        exporters=exporters,
        console=True,
        capture_environment=environment,
    ) as run:
        for step, line in enumerate(LINES):
            os.write(1, line)
            run.log({"loss": 0.5 / (step + 1)})
            time.sleep(0.1)
        os.write(2, b"a warning\n")
        time.sleep(0.1)
    return run


EXPECTED = LINES[0] + LINES[1] + STDERR_MARK + b"a warning\n"


def wandb_files(wandb_dir: Path, run_id: str) -> Path:
    (folder,) = glob.glob(str(wandb_dir / "wandb" / f"offline-run-*-{run_id}"))
    return Path(folder)


def saved_paths(folder: Path, run_id: str) -> list[str]:
    return [
        item.path
        for record in iter_records(folder / f"run-{run_id}.wandb")
        if record.WhichOneof("record_type") == "files"
        for item in record.files.files
    ]


def test_wandb_gets_output_log_and_requirements_in_its_run_files(tmp_path: Path) -> None:
    exporter = WandbExporter(mode="offline", dir=str(tmp_path / "wb"))
    run = printing_run(tmp_path / "runs", [exporter], environment=True)
    assert (run.dir / "output.log").read_bytes() == EXPECTED
    read_finished_log(tmp_path / "wb", run.id)
    folder = wandb_files(tmp_path / "wb", run.id)
    assert (folder / "files" / "output.log").read_bytes() == EXPECTED
    packages = runtel.Store(str(tmp_path / "runs")).run(run.id).artifact("requirements.txt")
    assert (folder / "files" / "requirements.txt").read_bytes() == Path(packages.path).read_bytes()
    assert {"output.log", "requirements.txt"} <= set(saved_paths(folder, run.id))


def test_wandb_gets_output_log_on_replay(tmp_path: Path) -> None:
    run = printing_run(tmp_path / "runs", [])
    stored = runtel.Store(str(tmp_path / "runs")).run(run.id)
    export_run(stored, WandbExporter(mode="offline", dir=str(tmp_path / "wb")))
    read_finished_log(tmp_path / "wb", run.id)
    assert (wandb_files(tmp_path / "wb", run.id) / "files" / "output.log").read_bytes() == EXPECTED


def test_mlflow_gets_output_log_live_and_on_replay(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    live = MlflowExporter(uri, "live", artifact_location=str(tmp_path / "artifacts" / "live"))
    run = printing_run(tmp_path / "runs", [live])
    client = MlflowClient(uri)
    assert live.mlflow_run_id is not None
    assert (
        Path(client.download_artifacts(live.mlflow_run_id, "output.log", str(tmp_path / "a"))).read_bytes()
        == EXPECTED
    )
    replayed = MlflowExporter(uri, "replayed", artifact_location=str(tmp_path / "artifacts" / "replayed"))
    export_run(runtel.Store(str(tmp_path / "runs")).run(run.id), replayed)
    assert replayed.mlflow_run_id is not None
    path = client.download_artifacts(replayed.mlflow_run_id, "output.log", str(tmp_path / "b"))
    assert Path(path).read_bytes() == EXPECTED


def test_otlp_gets_each_console_line_as_a_log_record_of_the_run_trace(
    tmp_path: Path,
    http_receiver: Server,  # noqa: F811 - the fixture imported above
) -> None:
    run = printing_run(tmp_path / "runs", [OtlpExporter(http_receiver.endpoint)])
    records = [
        (record, resource_logs.resource)
        for request in http_receiver.received.logs
        for resource_logs in request.resource_logs
        for scope in resource_logs.scope_logs
        for record in scope.log_records
    ]
    assert [(r.body.string_value, r.severity_text) for r, _ in records] == [
        ("epoch 0 loss 0.5", "INFO"),
        ("epoch 1 loss 0.25", "INFO"),
        ("a warning", "ERROR"),
    ]
    assert {r.trace_id.hex() for r, _ in records} == {run.id}
    assert {r.span_id.hex() for r, _ in records} == {format(run.root_span_id, "016x")}
    streams = [
        next(a.value.string_value for a in r.attributes if a.key == "log.iostream") for r, _ in records
    ]
    assert streams == ["stdout", "stdout", "stderr"]
    resource = {a.key: a.value.string_value for a in records[0][1].attributes}
    assert resource["runtel.run.id"] == run.id


@contextlib.contextmanager
def one_file_behind_both_descriptors(path: Path) -> Iterator[None]:
    """Descriptors 1 and 2 on one open file, as ``> f 2>&1`` leaves them (pytest keeps them apart,
    and sets them again between a test's phases: so within the test, not as a fixture)."""
    saved = [os.dup(1), os.dup(2)]
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def test_otlp_gets_merged_lines_without_a_stream_or_severity(
    tmp_path: Path,
    http_receiver: Server,  # noqa: F811
) -> None:
    with one_file_behind_both_descriptors(tmp_path / "console.txt"):
        run = printing_run(tmp_path / "runs", [OtlpExporter(http_receiver.endpoint)])
    merged = LINES[0] + LINES[1] + b"a warning\n"
    assert (tmp_path / "console.txt").read_bytes() == merged
    assert (run.dir / "output.log").read_bytes() == merged  # which stream wrote a line is not known
    records = [
        record
        for request in http_receiver.received.logs
        for resource_logs in request.resource_logs
        for scope in resource_logs.scope_logs
        for record in scope.log_records
    ]
    assert [(r.body.string_value, r.severity_number, r.severity_text) for r in records] == [
        ("epoch 0 loss 0.5", 0, ""),
        ("epoch 1 loss 0.25", 0, ""),
        ("a warning", 0, ""),
    ]
    assert all(a.key != "log.iostream" for r in records for a in r.attributes)


@pytest.mark.parametrize("how", ["keyword", "variable"])
def test_otlp_logs_off_sends_no_log_records(
    tmp_path: Path,
    http_receiver: Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "variable":
        monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    exporter = OtlpExporter(http_receiver.endpoint, logs=False if how == "keyword" else None)
    printing_run(tmp_path / "runs", [exporter])
    assert http_receiver.received.logs == [] and http_receiver.received.traces
