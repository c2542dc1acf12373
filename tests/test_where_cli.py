"""``runtel ls/compare/export --where``, ``ls --sort/--desc`` and ``runtel dump`` on real stored runs."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel
from runtel.cli import main

#: Values a text format loses unless written exactly: shortest-repr floats, extremes, NaN, infinities.
AWKWARD = [0.1 + 0.2, 1e-300, 5e-324, -0.0, 1.7976931348623157e308, math.nan, math.inf, -math.inf, 1 / 3]
#: Steps in logging order: a repeat and a step going back, both kept as logged.
STEPS = [0, 1, 1, 5, 3, 6, 7, 8, 9]


@pytest.fixture
def stored(base_dir: Path) -> dict[str, str]:
    ids = {}
    for name, lr, tags, acc in (
        ("adam-lr1e-4", 1e-4, ["baseline"], 0.95),
        ("adam-lr1e-2", 1e-2, [], 0.70),
        ("sgd-lr1e-3", 1e-3, ["baseline"], 0.85),
    ):
        optimizer = name.split("-")[0]
        with runtel.init(
            project="mnist",
            name=name,
            base_dir=str(base_dir),
            config={"lr": lr, "optimizer": {"name": optimizer}},
            tags=tags,
            system_interval=0,
        ) as run:
            for step in range(4):
                run.log({"train/loss": 1.0 / (step + 1), "val/acc": acc * (step + 1) / 4}, step=step)
            ids[name] = run.id
    with runtel.init(project="mnist", name="awkward", base_dir=str(base_dir), system_interval=0) as run:
        for step, value in zip(STEPS, AWKWARD, strict=True):
            run.log({"odd": value}, step=step)
        ids["awkward"] = run.id
    return ids


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _names(capsys: pytest.CaptureFixture[str], base_dir: Path, *argv: str) -> list[str]:
    return [row["name"] for row in _json(capsys, "ls", "--base-dir", str(base_dir), *argv)["runs"]]


def test_ls_where_keeps_the_matching_runs(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _names(capsys, base_dir, "--where", "params.lr < 1e-3 and status = 'completed'") == ["adam-lr1e-4"]
    assert _names(capsys, base_dir, "--where", "params.optimizer.name = 'adam'") == [
        "adam-lr1e-4",
        "adam-lr1e-2",
    ]
    assert _names(capsys, base_dir, "--where", "'baseline' in tags", "--name", "sgd") == ["sgd-lr1e-3"]
    assert _names(capsys, base_dir, "--where", "metrics['val/acc'].max > 0.8") == [
        "adam-lr1e-4",
        "sgd-lr1e-3",
    ]


def test_ls_sort_by_a_metric_descending(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_acc = _names(capsys, base_dir, "--sort", "metrics['val/acc'].max", "--desc")
    assert by_acc == ["adam-lr1e-4", "sgd-lr1e-3", "adam-lr1e-2", "awkward"]  # no val/acc: last
    assert _names(capsys, base_dir, "--sort", "params.lr") == [
        "adam-lr1e-4",
        "sgd-lr1e-3",
        "adam-lr1e-2",
        "awkward",
    ]
    assert _names(capsys, base_dir, "--desc") == ["awkward", "sgd-lr1e-3", "adam-lr1e-2", "adam-lr1e-4"]


def test_ls_where_table_lists_only_the_matches(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--base-dir", str(base_dir), "--where", "params.lr = 1e-2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 runs\n") and "adam-lr1e-2" in out and "adam-lr1e-4" not in out


def test_a_bad_where_exits_1_with_the_caret(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--base-dir", str(base_dir), "--where", "params.lr < 1e-3 and statsu = 'x'"]) == 1
    error = capsys.readouterr().err.splitlines()
    assert (
        error[0] == "runtel: error: invalid filter: unknown field 'statsu'; fields are name, id, project, "
        "status, tags, start_time, duration, params.<key> and metrics at column 22:"
    )
    assert error[1:] == ["  params.lr < 1e-3 and statsu = 'x'", "  " + " " * 21 + "^"]
    assert main(["ls", "--base-dir", str(base_dir), "--sort", "metrics.loss.mean"]) == 1
    assert "unknown metric stat 'mean'" in capsys.readouterr().err
    assert main(["ls", "--base-dir", str(base_dir), "--sweep", "s", "--where", "name = 'x'"]) == 1
    assert "does not combine" in capsys.readouterr().err


def test_compare_where_compares_the_matching_runs(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _json(
        capsys, "compare", "--where", "'baseline' in tags", "--metric", "val/acc", "--base-dir", str(base_dir)
    )
    assert [(row["name"], row["max"]) for row in report["metrics"]] == [
        ("adam-lr1e-4", 0.95),
        ("sgd-lr1e-3", 0.85),
    ]
    assert [row["key"] for row in report["params_differing"]] == ["lr", "optimizer/name"]
    assert main(["compare", "--where", "name = 'awkward'", "--base-dir", str(base_dir)]) == 1
    assert "compare needs two or more runs matching --where \"name = 'awkward'\", got 1 ('awkward')" in (
        capsys.readouterr().err
    )
    assert main(["compare", "awkward", "sgd-lr1e-3", "--where", "True", "--base-dir", str(base_dir)]) == 1
    assert "not both" in capsys.readouterr().err


def test_export_where_sends_exactly_the_matching_runs(
    stored: dict[str, str], base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = tmp_path / "tb"
    where = "params.optimizer.name = 'adam'"
    argv = [
        "export",
        "--where",
        where,
        "--to",
        "tensorboard",
        "--log-dir",
        str(log_dir),
        "--base-dir",
        str(base_dir),
    ]
    result = _json(capsys, *argv)
    assert [item["name"] for item in result["runs"]] == ["adam-lr1e-4", "adam-lr1e-2"]
    folders = sorted({path.parent for path in log_dir.rglob("events.out.tfevents.*")})
    assert [folder.name.rpartition("_")[0] for folder in folders] == ["adam-lr1e-2", "adam-lr1e-4"]
    accumulator = EventAccumulator(str(folders[1]))
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("val/acc")] == [
        (step, pytest.approx(0.95 * (step + 1) / 4, rel=1e-6)) for step in range(4)
    ]
    assert (
        main(["export", "--where", "name = 'nope'", "--to", "tensorboard", "--base-dir", str(base_dir)]) == 1
    )
    assert "no run in" in capsys.readouterr().err
    assert (
        main(["export", "--all", "--where", where, "--to", "tensorboard", "--base-dir", str(base_dir)]) == 1
    )
    assert "(one of them)" in capsys.readouterr().err


def _same(read: list[float]) -> bool:
    """Bit for bit the logged values: NaN is NaN, -0.0 keeps its sign."""
    expected = np.array(AWKWARD)
    got = np.array(read)
    return bool(
        np.array_equal(expected, got, equal_nan=True) and (np.signbit(expected) == np.signbit(got)).all()
    )


@pytest.mark.parametrize(("form", "separator"), [("csv", ","), ("tsv", "\t")])
def test_dump_csv_and_tsv_round_trip_exactly(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str], form: str, separator: str
) -> None:
    assert main(["dump", "awkward", "odd", "--format", form, "--base-dir", str(base_dir)]) == 0
    text = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(text), delimiter=separator))
    assert rows[0] == ["step", "time", "value"]
    assert [int(row[0]) for row in rows[1:]] == STEPS
    assert _same([float(row[2]) for row in rows[1:]])
    steps, times, _ = runtel.Store(base_dir).run(stored["awkward"]).history("odd")
    assert [float(row[1]) for row in rows[1:]] == times.tolist()
    frame = pd.read_csv(io.StringIO(text), sep=separator)
    assert frame["step"].tolist() == steps.tolist() and _same(frame["value"].tolist())
    assert frame["time"].tolist() == times.tolist()


def test_dump_jsonl_writes_non_finite_values_as_strings(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", stored["awkward"][:8], "odd", "--format", "jsonl", "--base-dir", str(base_dir)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["step"] for line in lines] == STEPS
    assert [line["value"] for line in lines][5:8] == ["nan", "inf", "-inf"]
    assert _same([float(line["value"]) for line in lines])


def test_dump_of_an_unknown_metric_names_the_ones_there(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dump", "awkward", "loss", "--base-dir", str(base_dir)]) == 1
    assert capsys.readouterr().err.strip() == "runtel: error: run awkward has no metric 'loss'; it has: odd"


def test_dump_as_a_command_feeds_a_pipe(stored: dict[str, str], base_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "runtel.cli",
        "dump",
        "adam-lr1e-4",
        "train/loss",
        "--base-dir",
        str(base_dir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines()[0] == "step,time,value"
    assert [line.split(",")[2] for line in done.stdout.splitlines()[1:]] == [
        "1.0",
        "0.5",
        "0.3333333333333333",
        "0.25",
    ]


def test_ls_where_names_a_file_it_could_not_read(
    stored: dict[str, str], base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = runtel.Store(base_dir).run("sgd-lr1e-3")
    (damaged.dir / "hyperparameters.json").write_text('{"lr": 0.0')  # torn
    where = "params.lr < 1"
    assert _names(capsys, base_dir, "--where", where) == ["adam-lr1e-4", "adam-lr1e-2"]
    listing = _json(capsys, "ls", "--base-dir", str(base_dir), "--where", where, "--sort", "params.lr")
    assert listing["unreadable"] == [
        {
            "folder": damaged.dir.name,
            "reason": "hyperparameters.json is not valid JSON (half-written or damaged, line 1 column 11)",
        }
    ]
    assert main(["ls", "--base-dir", str(base_dir), "--where", where]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"unreadable {damaged.dir.name}/: hyperparameters.json is not valid JSON (half-written or damaged, "
        "line 1 column 11) (its fields count as missing in --where/--sort)"
    )


class _Counting(io.StringIO):
    """A sink that keeps only the number of characters and lines written."""

    def __init__(self) -> None:
        super().__init__()
        self.chars = self.lines = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        self.lines += text.count("\n")
        return len(text)


def test_dump_holds_one_batch_of_points_as_python_objects_at_a_time(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 300_000
    with runtel.init(name="long", base_dir=str(base_dir), system_interval=0, console=False) as run:
        for step in range(count):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
    sink = _Counting()
    monkeypatch.setattr(sys, "stdout", sink)
    tracemalloc.start()
    try:
        assert main(["dump", run.id, "loss", "--base-dir", str(base_dir)]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.lines == count + 1
    # the arrays read take 7 MiB, the reading about as much again; whole lists of the points: 40+ MiB
    assert peak < 28 * 2**20, f"peak {peak / 2**20:.1f} MiB for {count:,} points"
