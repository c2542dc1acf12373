"""``Store.frame`` and ``StoredRun.frame``: pandas and polars DataFrames with the stored values exactly."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import runtel
from runtel.errors import ConfigError, MissingExtraError
from runtel.store.query import Store

BIG = 2**60 + 1  # exact as an int64, not as a float


@pytest.fixture
def store(base_dir: Path) -> Store:
    specs = [
        ("a", {"lr": 0.1, "opt": {"name": "adam", "beta": 0.9}, "amp": True, "width": 64, "big": BIG}, ["x"]),
        ("b", {"lr": 3e-4, "opt": {"name": "sgd"}, "amp": False, "width": "wide", "layers": [64, 32]}, []),
        ("c", {"lr": 1, "seed": None}, ["x", "y"]),
    ]
    for name, params, tags in specs:
        with runtel.init(
            project="frames", name=name, base_dir=str(base_dir), config=params, tags=tags, system_interval=0
        ) as run:
            for step in range(3):
                run.log(
                    {"train/loss": [1.0, math.nan, 0.25][step], "val/acc": 0.1 * step + len(name)}, step=step
                )
            if name == "b":
                run.log({"train/loss": 7.5}, step=2)  # a second point at step 2
                run.log({"extra": -math.inf}, step=10)
    return Store(base_dir)


def test_runs_frame_columns_and_dtypes(store: Store) -> None:
    frame = store.frame()
    assert list(frame.columns[:7]) == ["id", "name", "project", "status", "tags", "start_time", "duration"]
    assert [c for c in frame.columns if c.startswith("params.")] == [
        "params.lr",
        "params.opt.name",
        "params.opt.beta",
        "params.amp",
        "params.width",
        "params.big",
        "params.layers",
        "params.seed",
    ]
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    assert dtypes["name"] == "string" and dtypes["status"] == "string" and dtypes["tags"] == "object"
    assert dtypes["start_time"] == "Float64" and dtypes["duration"] == "Float64"
    assert dtypes["params.lr"] == "Float64"  # 0.1, 3e-4 and the int 1: one exact float column
    assert dtypes["params.opt.name"] == "string" and dtypes["params.amp"] == "boolean"
    assert dtypes["params.width"] == "object" and dtypes["params.big"] == "Int64"
    assert dtypes["metrics.train/loss.count"] == "Int64" and dtypes["metrics.train/loss.last"] == "Float64"
    assert frame["name"].tolist() == ["a", "b", "c"]
    assert frame["tags"].tolist() == [["x"], [], ["x", "y"]]
    assert frame["params.width"].tolist() == [64, "wide", None]
    assert frame["params.big"][0] == BIG and frame["params.big"].isna().tolist() == [False, True, True]
    assert frame["params.layers"].tolist() == [None, [64, 32], None]
    assert frame["params.seed"].isna().all()  # JSON null is missing


def test_runs_frame_values_are_the_stored_ones(store: Store) -> None:
    frame = store.frame()
    runs = store.runs()
    assert frame["id"].tolist() == [run.id for run in runs]
    assert frame["start_time"].tolist() == [run.metadata["start_time"] for run in runs]
    assert frame["duration"].tolist() == [run.metadata["duration"] for run in runs]
    assert frame["params.lr"].tolist() == [0.1, 3e-4, 1.0]
    assert frame["params.opt.beta"].isna().tolist() == [False, True, True]
    loss = {
        stat: frame[f"metrics.train/loss.{stat}"].tolist() for stat in ("last", "min", "max", "best", "count")
    }
    assert loss == {
        "last": [0.25, 7.5, 0.25],
        "min": [0.25, 0.25, 0.25],
        "max": [1.0, 7.5, 1.0],
        "best": [0.25, 0.25, 0.25],
        "count": [3, 4, 3],
    }
    assert frame["metrics.val/acc.best"].tolist() == frame["metrics.val/acc.max"].tolist()
    assert frame["metrics.extra.last"].isna().tolist() == [True, False, True]
    assert frame["metrics.extra.last"][1] == -math.inf


def test_runs_frame_where_and_metrics(store: Store) -> None:
    frame = store.frame(where="params.opt.name = 'adam' or 'y' in tags", metrics=["val/acc"])
    assert frame["name"].tolist() == ["a", "c"]
    assert [c for c in frame.columns if c.startswith("metrics.")] == [
        f"metrics.val/acc.{stat}" for stat in ("last", "min", "max", "best", "count", "last_step")
    ]
    empty = store.frame(where="name = 'nobody'")
    assert len(empty) == 0 and "metrics.val/acc.max" not in empty.columns and "id" in empty.columns


def test_history_frame_joins_on_step_and_keeps_every_point(store: Store) -> None:
    frame = store.run("b").frame()
    assert list(frame.columns) == ["step", "time", "train/loss", "val/acc", "extra"]
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {
        "step": "int64",
        "time": "float64",
        "train/loss": "Float64",
        "val/acc": "Float64",
        "extra": "Float64",
    }
    assert frame["step"].tolist() == [0, 1, 2, 2, 10]
    loss = frame["train/loss"]
    assert loss.isna().tolist() == [False, False, False, False, True]
    assert loss[0] == 1.0 and math.isnan(loss.to_numpy(dtype=float, na_value=0.0)[1]) and loss[2] == 0.25
    assert loss[3] == 7.5  # the second point at step 2: its own row, nothing averaged or dropped
    assert frame["val/acc"].isna().tolist() == [False, False, False, True, True]
    assert frame["extra"][4] == -math.inf
    run = store.run("b")
    firsts = [run.history(name)[1] for name in ("train/loss", "val/acc")]
    assert frame["time"][0] == min(firsts[0][0], firsts[1][0])  # a row's time: its earliest point's
    assert frame["time"][3] == firsts[0][3]  # the second point at step 2 has a row of its own


def test_history_frame_long_has_every_point_with_its_time(store: Store) -> None:
    run = store.run("b")
    frame = run.frame(["train/loss", "extra"], long=True)
    assert list(frame.columns) == ["metric", "step", "time", "value"]
    steps, times, values = run.history("train/loss")
    mine = frame[frame["metric"] == "train/loss"]
    assert mine["step"].tolist() == steps.tolist() and mine["time"].tolist() == times.tolist()
    assert np.array_equal(mine["value"].to_numpy(), values, equal_nan=True)
    assert frame["metric"].tolist()[-1] == "extra" and str(frame["step"].dtype) == "int64"


def test_history_frame_of_chosen_metrics(store: Store) -> None:
    frame = store.run("a").frame(["val/acc"])
    assert list(frame.columns) == ["step", "time", "val/acc"]
    assert frame["val/acc"].tolist() == [1.0, 1.1, 1.2]
    with pytest.raises(ConfigError, match="a list of names"):
        store.run("a").frame("val/acc")
    with pytest.raises(runtel.MetricNotFoundError, match="no metric 'nope'"):
        store.run("a").frame(["nope"])


def test_polars_frames_keep_nan_apart_from_null(store: Store) -> None:
    runs = store.frame(backend="polars")
    assert isinstance(runs, pl.DataFrame) and runs.height == 3
    assert runs.schema["params.big"] == pl.Int64 and runs["params.big"][0] == BIG
    assert runs.schema["tags"] == pl.List(pl.String) and runs["tags"].to_list() == [["x"], [], ["x", "y"]]
    assert runs.schema["params.amp"] == pl.Boolean and runs["params.amp"].to_list() == [True, False, None]
    assert runs["params.width"].to_list() == [64, "wide", None]
    history = store.run("b").frame(backend="polars")
    loss = history["train/loss"]
    assert loss.is_null().to_list() == [False, False, False, False, True]
    assert loss.is_nan().to_list()[:4] == [False, True, False, False]
    assert history["step"].to_list() == [0, 1, 2, 2, 10]
    long = store.run("b").frame(long=True, backend="polars")
    assert long.height == 4 + 3 + 1 and long.schema["metric"] == pl.String


def test_a_damaged_file_leaves_cells_missing_and_is_named(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    damaged = store.run("b")
    (damaged.dir / "summary.json").write_text("[]")
    with caplog.at_level("WARNING", logger="runtel"):
        frame = store.frame()
    assert frame["metrics.train/loss.count"].isna().tolist() == [False, True, False]
    assert frame["params.opt.name"].tolist()[1] == "sgd"
    assert caplog.messages == [
        "runtel: 1 file(s) of the runs could not be read; their cells are missing: "
        f"{damaged.dir.name}/: summary.json holds a JSON array, not a JSON object"
    ]


def test_an_unknown_backend_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="backend is 'pandas' or 'polars', got 'arrow'"):
        store.frame(backend="arrow")  # type: ignore[arg-type]


def test_without_pandas_the_error_names_the_extra(store: Store, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pandas.py").write_text("raise ImportError('pandas is not installed here')\n")
    (blocker / "polars.py").write_text("raise ImportError('polars is not installed here')\n")
    code = (
        "import sys, runtel\n"
        f"store = runtel.Store({str(store.base_dir)!r})\n"
        "calls = (store.frame, store.run('a').frame, lambda: store.frame(backend='polars'))\n"
        "for call in calls:\n"
        "    try:\n        call()\n    except runtel.MissingExtraError as exc:\n        print(exc)\n"
    )
    env = {"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "DataFrames need pandas: pip install 'runtel[frames]' (or pass backend='polars')",
        "DataFrames need pandas: pip install 'runtel[frames]' (or pass backend='polars')",
        "backend='polars' needs polars: pip install 'runtel[polars]'",
    ]
    assert issubclass(MissingExtraError, ImportError)
