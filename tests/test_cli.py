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
    (base_dir / "foreign").mkdir()  # another tool's folder: an id, but a name and project runtel never writes
    (base_dir / "foreign" / "metadata.json").write_text(
        '{"id": "abcdef0123456789", "name": 5, "project": ["x"]}'
    )
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
    assert "skipped foreign/: metadata.json field 'name' is an integer, not a string" in out
    listing = _json(capsys, "ls", "--base-dir", str(base_dir))
    assert [row["name"] for row in listing["runs"]] == ["alpha", "beta"]
    assert listing["runs"][0]["status"] == "completed" and listing["runs"][0]["points"] == 20
    assert listing["skipped"] == [
        {"folder": "foreign", "reason": "metadata.json field 'name' is an integer, not a string"},
        {"folder": "scratch", "reason": "not a run folder (no metadata.json)"},
    ]
    assert [r["name"] for r in _json(capsys, "ls", "--base-dir", str(base_dir), "--tag", "beta")["runs"]] == [
        "beta"
    ]


def test_ls_filters_by_name_beside_a_foreign_folder(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--base-dir", str(base_dir), "--name", "go"]) == 0
    assert "0 runs" in capsys.readouterr().out
    listing = _json(capsys, "ls", "--base-dir", str(base_dir), "--name", "ALP")
    assert [row["name"] for row in listing["runs"]] == ["alpha"]


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


def test_compare_needs_two_runs(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "alpha", "--base-dir", str(base_dir)]) == 1
    assert "runtel: error: compare needs two or more runs, got 1 ('alpha')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["show", "alpha"],
        ["compare", "alpha", "beta"],
        ["export", "--all", "--to", "tensorboard"],
        ["ui", "--port", "0"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_missing_store_folder_is_an_error(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo"
    assert main([*argv, "--base-dir", str(missing)]) == 1
    assert f"runtel: error: no runtel store at {str(missing)!r}" in capsys.readouterr().err
    assert not missing.exists()


def test_demo_stores_a_completed_run(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--base-dir", str(base_dir), "--epochs", "1"]) == 0
    assert "runtel demo: 1 epochs" in capsys.readouterr().out
    (run,) = runtel.Store(base_dir).runs()
    assert (run.name, run.project, run.status) == ("softmax-demo", "demo", "completed")
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(run.metrics())
    assert run.history("train/loss")[0].size == 2048 // 32
    assert run.params()["lr"] == 0.5


def test_demo_json_names_the_run_and_its_folder(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, "demo", "--base-dir", str(base_dir), "--epochs", "1")
    (run,) = runtel.Store(base_dir).runs()
    assert result == {"run_id": run.id, "name": "softmax-demo", "folder": str(run.dir)}
    listing = _json(capsys, "ls", "--base-dir", str(base_dir))
    assert [(row["id"], row["status"]) for row in listing["runs"]] == [(run.id, "completed")]


def test_export_json_has_one_object_per_run(
    stored: dict[str, str], base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = tmp_path / "tb"
    argv = [
        "export",
        "alpha",
        "beta",
        "--to",
        "tensorboard",
        "--log-dir",
        str(log_dir),
        "--base-dir",
        str(base_dir),
    ]
    result = _json(capsys, *argv)
    assert [(item["run_id"], item["name"], item["target"]) for item in result["runs"]] == [
        (stored["alpha"], "alpha", "tensorboard"),
        (stored["beta"], "beta", "tensorboard"),
    ]
    for item in result["runs"]:
        assert item["points"] == 20 and item["seconds"] > 0 and item["error"] is None
        assert isinstance(item["adaptations"], dict)
    assert len(list(log_dir.glob("*/events.out.tfevents.*"))) == 2


def test_export_json_reports_a_run_that_failed(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", "alpha", "--to", "tensorboard", "-o", "no_such_option=1", "--base-dir", str(base_dir)]
    assert main([*argv, "--json"]) == 1
    (item,) = json.loads(capsys.readouterr().out)["runs"]
    assert (item["run_id"], item["points"]) == (stored["alpha"], None)
    assert item["error"].startswith("TypeError:") and "no_such_option" in item["error"]


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


def test_show_lists_every_adaptation_with_examples_live_and_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "runs"
    options = {"tensorboard": {"log_dir": str(tmp_path / "tb-live")}}
    with runtel.init(
        project="p", name="again", base_dir=str(base), exporters=["tensorboard"], exporter_options=options
    ) as run:
        for step in (0, 1, 2, 0, 1):  # a re-evaluation: steps go back
            run.log({"loss": float(step)}, step=step)
    replay = [
        "export",
        run.id,
        "--to",
        "tensorboard",
        "--base-dir",
        str(base),
        "--log-dir",
        str(tmp_path / "tb"),
    ]
    assert main(replay) == 0
    capsys.readouterr()

    report = _json(capsys, "show", run.id, "--base-dir", str(base))
    expected_example = {"metric": "loss", "step": 0, "sent_as": 3, "reason": "step went backwards"}
    for source in ("tensorboard", "tensorboard replay"):
        shifted = report["adaptations"][source]["step_shifted"]
        assert shifted["count"] == 2 and shifted["examples"][0] == expected_example
    assert [(r["exporter"], r["status"], r["points"]) for r in report["replays"]] == [
        ("tensorboard", "ok", 5)
    ]
    assert main(["show", run.id, "--base-dir", str(base)]) == 0
    table = capsys.readouterr().out
    assert (
        "step_shifted" in table
        and '"sent_as": 3' in table
        and "replayed to tensorboard: ok, 5 points" in table
    )
