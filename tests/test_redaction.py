"""Credentials never reach a stored or logged message: run folder, ``runtel show``, the UI, log records."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

import runtel
from runtel._redact import redact, remember, remember_held_by
from runtel.cli import main
from runtel.exporters.base import Capabilities
from runtel.exporters.mlflow import MlflowExporter
from runtel.ui import data

PASSWORD = "secret"


def closed_port() -> int:
    """A port nothing listens on, checked by trying to connect to it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect(("127.0.0.1", port))
    return port


def test_password_of_an_unreachable_mlflow_server_is_stored_and_logged_nowhere(
    base_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    caplog.set_level(logging.DEBUG)
    uri = f"http://user:{PASSWORD}@127.0.0.1:{closed_port()}"
    exporter = MlflowExporter(tracking_uri=uri, experiment_name="redaction")
    run = runtel.init(
        project="p", name="unreachable", base_dir=str(base_dir), exporters=[exporter], export_retries=0
    )
    run.log({"loss": 0.5})
    try:
        raise ConnectionError(f"cannot reach {uri} (Authorization: Basic dXNlcjpzZWNyZXQ=)")
    except ConnectionError as exc:
        run.finish("failed", error=f"{type(exc).__name__}: {exc}")

    stored = runtel.Store(base_dir).run(run.id)
    report = stored.summary()["exporters"]["mlflow"]
    assert report["status"] == "failed"
    assert "127.0.0.1" in report["error"]  # the error stays useful: only the credential is masked
    for path in stored.dir.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert main(["show", run.id, "--base-dir", str(base_dir)]) == 0
    assert main(["show", run.id, "--base-dir", str(base_dir), "--json"]) == 0
    shown = capsys.readouterr()
    assert "mlflow" in shown.out
    assert PASSWORD not in shown.out + shown.err
    assert any(record.name == "runtel" for record in caplog.records)
    for record in caplog.records:
        assert PASSWORD not in record.getMessage(), record.name
        assert PASSWORD not in (record.exc_text or ""), record.name
    assert PASSWORD not in caplog.text
    shown_in_ui = json.dumps([data.run_card(stored), data.run_row(stored)], default=str)
    assert "127.0.0.1" in shown_in_ui  # the card shows the exporter error, masked
    assert PASSWORD not in shown_in_ui


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("url http://user:pa55word@host:5000/api", "url http://***@host:5000/api"),
        ("https://tok3n-only@github.com/x.git", "https://***@github.com/x.git"),
        ("Authorization: Bearer abc.def-123456", "Authorization: Bearer ***"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': '***'}"),
        ("sent bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "sent bearer ***"),
        ("GET /v1?api_key=sk-12345&page=2", "GET /v1?api_key=***&page=2"),
        ("password=hunter22 retry", "password=*** retry"),
        ('{"api_token": "eyJhcGlfYWRkcmVzcyI6"}', '{"api_token": "***"}'),
        ("client_secret: 'two words'", "client_secret: '***'"),
        ("max_tokens=5 tokenizer=bert", "max_tokens=5 tokenizer=bert"),
        ("KeyError: 'token'", "KeyError: 'token'"),
    ],
)
def test_credentials_in_text_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_ordinary_environment_values_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("OLDPWD", str(tmp_path))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-ish")
    text = f"cannot write {tmp_path}/run: false-ish"
    assert redact(text) == text


def test_secrets_from_the_environment_and_from_exporters_are_masked_anywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    remember("neptune-token-value")
    text = "bad key 0123456789abcdef0123456789abcdef01234567 and neptune-token-value rejected"
    assert redact(text) == "bad key *** and *** rejected"


class _KeyedExporter:
    """A third-party exporter holding its API key, whose failure quotes the key bare."""

    name = "keyed"
    capabilities = Capabilities()

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def export(self, records: object) -> object:
        raise PermissionError(f"the server refused key {self._api_key}")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def test_api_key_held_by_an_exporter_is_masked_in_its_report(base_dir: Path) -> None:
    key = "k3y-given-in-config-0042"
    run = runtel.init(base_dir=str(base_dir), exporters=[_KeyedExporter(key)], export_retries=0)
    run.log({"loss": 1.0})
    run.finish()
    error = runtel.Store(base_dir).run(run.id).summary()["exporters"]["keyed"]["error"]
    assert "refused key ***" in error
    assert key not in error


def test_keys_given_to_the_wandb_and_neptune_exporters_are_masked(tmp_path: Path) -> None:
    from runtel.exporters.neptune import NeptuneExporter
    from runtel.exporters.wandb import WandbExporter

    wandb_key, neptune_token, passed_on = "wandb-key-0123456789", "eyJuZXB0dW5lIjoidG9rZW4ifQ==", "pass-0n-42"
    remember_held_by(WandbExporter(mode="offline", dir=str(tmp_path), api_key=wandb_key))
    remember_held_by(NeptuneExporter(api_token=neptune_token, data_directory=str(tmp_path)))
    remember_held_by(WandbExporter(mode="offline", dir=str(tmp_path), settings_token=passed_on))
    text = f"401 for {wandb_key}; token {neptune_token} rejected; {passed_on}"
    assert redact(text) == "401 for ***; token *** rejected; ***"
