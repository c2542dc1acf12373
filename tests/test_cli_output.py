"""What the CLI prints: markup never eaten, pipes closed early, sizes for people, the best column."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import runtel
from runtel.cli import main
from runtel.cli_commands import human_bytes


@pytest.fixture
def one_run(base_dir: Path) -> runtel.Run:
    with runtel.init(project="cli", name="r[mlflow]", base_dir=str(base_dir), system_interval=3600) as run:
        for step in range(3):
            run.log(
                {"lr": 0.1, "timing/step_seconds": 0.5, "train/loss": 1.0 / (step + 1), "val/acc": step / 4},
                step=step,
            )
        run.sample_system()
    return run


def test_a_refused_re_export_keeps_brackets_and_names_the_cli_flag(
    one_run: runtel.Run, base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "export",
        one_run.id,
        "--to",
        "tensorboard",
        "--base-dir",
        str(base_dir),
        "--log-dir",
        "tb[mlflow]",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "tb[mlflow]" in err and "r[mlflow]" in err
    assert "pass --force to replace it" in err and "force=True" not in err


def test_export_help_describes_the_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert '{"runs": [{"run_id"' in " ".join(capsys.readouterr().out.split())


def test_a_pipe_closed_early_ends_quietly(base_dir: Path) -> None:
    with runtel.init(project="cli", base_dir=str(base_dir), config={"prompt": "x" * 300_000}) as run:
        run.log({"x": 1.0})
    command = [sys.executable, "-m", "runtel.cli", "show", run.id, "--json", "--base-dir", str(base_dir)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.readline()
    child.stdout.close()  # as `| head -1` does
    err = child.stderr.read().decode()
    child.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_sizes_print_in_binary_units() -> None:
    assert human_bytes(2_191_710_000) == "2.04 GiB"
    assert (human_bytes(512), human_bytes(1536), human_bytes(5 * 2**20)) == ("512 B", "1.50 KiB", "5.00 MiB")


def test_show_prints_byte_series_humanly(
    one_run: runtel.Run, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", one_run.id, "--base-dir", str(base_dir)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "system/memory.used" in line]
    assert lines and "iB" in lines[0] and "e+" not in lines[0]


def test_a_short_id_prefix_names_the_eight_character_rule(
    one_run: runtel.Run, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", one_run.id[:5], "--base-dir", str(base_dir)]) == 1
    assert "at least 8 characters" in capsys.readouterr().err


def test_ls_best_column_prefers_validation_and_objective_metrics(
    one_run: runtel.Run, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--json", "--base-dir", str(base_dir)]) == 0
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    assert row["best"] == {"val/acc": 0.5, "train/loss": 1.0 / 3}
    assert main(["ls", "--json", "--base-dir", str(base_dir), "--metric", "lr"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["best"] == {"lr": 0.1}
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    assert "val/acc=0.5" in capsys.readouterr().out
