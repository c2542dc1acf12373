"""``runtel ls/show/compare/ui`` on real stored runs: tables, ``--json`` that parses, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.cli import main


@pytest.fixture
def stored(base_dir: Path, tmp_path: Path) -> dict[str, str]:
    ids = {}
    for name, lr in (("alpha", 0.1), ("beta", 0.01)):
        with runtel.init(
            project="cli", name=name, base_dir=str(base_dir), config={"lr": lr}, tags=[name]
        ) as run:
            for _ in run.epochs(2):
                for _ in range(5):
                    run.log({"train/loss": 1.0 / (run.step + 2), "val/acc": run.step * lr})
            (tmp_path / "w.bin").write_bytes(name.encode())
            run.log_artifact(str(tmp_path / "w.bin"))
            ids[name] = run.id
    (base_dir / "scratch").mkdir()
    return ids


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ls_table_and_json(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and stored["beta"][:8] in out and "skipped scratch/" in out
    listing = _json(capsys, "ls", "--base-dir", str(base_dir))
    assert [row["name"] for row in listing["runs"]] == ["alpha", "beta"]
    assert listing["runs"][0]["status"] == "completed" and listing["runs"][0]["points"] == 20
    assert listing["skipped"] == [{"folder": "scratch", "reason": "not a run folder (no metadata.json)"}]
    assert [r["name"] for r in _json(capsys, "ls", "--base-dir", str(base_dir), "--tag", "beta")["runs"]] == [
        "beta"
    ]


def test_show_table_and_json(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "alpha", "--base-dir", str(base_dir)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1" in out and "w.bin" in out and "local" in out
    report = _json(capsys, "show", stored["alpha"][:8], "--base-dir", str(base_dir))
    assert report["params"] == {"lr": 0.1}
    assert report["metrics"]["val/acc"]["count"] == 10
    assert report["exporters"]["local"] == {"status": "ok", "error": None, "adaptations": {}}
    assert [(a["name"], a["version"]) for a in report["artifacts"]] == [("w.bin", 1)]
    assert [span["name"] for span in report["spans"]] == ["epoch 0", "epoch 1"]


def test_compare_table_and_json(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "alpha", "beta", "--metric", "val/acc", "--base-dir", str(base_dir)]
    assert main(argv) == 0
    assert "val/acc" in capsys.readouterr().out
    result = _json(capsys, *argv)
    assert [(row["name"], row["best"]) for row in result["metrics"]] == [("alpha", 0.8), ("beta", 0.08)]
    assert result["params_differing"] == [
        {"key": "lr", "values": {stored["alpha"]: 0.1, stored["beta"]: 0.01}}
    ]


def test_unknown_run_exits_1_with_a_message(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "nope", "--base-dir", str(base_dir)]) == 1
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["compare", "alpha", "nope", "--base-dir", str(base_dir)]) == 1
    assert main(["compare", "alpha", "beta", "--metric", "absent", "--base-dir", str(base_dir)]) == 1
    assert "absent" in capsys.readouterr().err


def test_ui_serves_the_page_on_loopback(stored: dict[str, str], base_dir: Path) -> None:
    command = [sys.executable, "-m", "runtel.cli", "ui", "--base-dir", str(base_dir), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while "runtel UI at" not in line:
            assert line, "the UI exited before printing its address"
            line = process.stderr.readline()
        url = line.split("runtel UI at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"runtel" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=10)
