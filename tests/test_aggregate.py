"""``Store.aggregate`` and ``runtel ls --group-by`` against a plain numpy computation of the same groups.

The store holds real runs: seeds of three learning rates whose series cover different step ranges with
different strides (so interpolation happens), a NaN point, a step logged twice, a group of one run, a
run without the ``lr`` param and one without the metric.
"""

from __future__ import annotations

import bisect
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtel
from runtel.cli import main
from runtel.errors import ConfigError, FilterSyntaxError
from runtel.store.aggregate import Aggregate, aggregate

METRIC = "val/acc"

#: name -> (params, tags, {step: value} in logging order as a list of (step, value))
RUNS: dict[str, tuple[dict[str, Any], list[str], list[tuple[int, float]]]] = {
    "a-s0": ({"lr": 0.1, "opt": "adam", "seed": 0}, ["base"], [(s, 0.5 + 0.02 * s) for s in range(0, 21)]),
    "a-s1": ({"lr": 0.1, "opt": "sgd", "seed": 1}, ["base"], [(s, 0.4 + 0.025 * s) for s in range(2, 31, 2)]),
    "a-s2": (
        {"lr": 0.1, "opt": "adam", "seed": 2},
        ["base", "x"],
        [(5, 0.55), (8, math.nan), (11, 0.71), (14, 0.69)],
    ),
    "b-s0": ({"lr": 0.01, "opt": "adam", "seed": 0}, [], [(s, 0.3 + 0.01 * s) for s in range(0, 40, 3)]),
    "b-s1": (
        {"lr": 0.01, "opt": "sgd", "seed": 1},
        [],
        [(0, 0.2), (10, 0.6), (20, 0.7), (10, 0.65), (30, 0.9)],  # step 10 logged twice: the last counts
    ),
    "c-s0": ({"lr": 0.001, "opt": "adam", "seed": 0}, ["base"], [(1, 0.1), (4, 0.4), (9, 0.2)]),
    "no-lr": ({"opt": "adam"}, [], [(0, 0.9), (1, 0.95)]),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> runtel.Store:
    base = tmp_path_factory.mktemp("aggregate") / "runs"
    for name, (params, tags, points) in RUNS.items():
        with runtel.init(
            project="grid", name=name, base_dir=str(base), config=params, tags=tags, system_interval=0
        ) as run:
            for step, value in points:
                run.log({METRIC: value}, step=step)
    with runtel.init(project="grid", name="other", base_dir=str(base), system_interval=0) as run:
        run.log({"train/loss": 1.0}, step=0)
    return runtel.Store(base)


def _curve(name: str) -> dict[int, float]:
    return dict(RUNS[name][2])  # a later (step, value) replaces an earlier one


def _at(curve: dict[int, float], step: float) -> float:
    """The run's value at ``step``, written out point by point: exact hit, else linear between
    neighbours, else (outside the run's range) NaN."""
    steps = sorted(curve)
    if step in curve:
        return curve[int(step)]
    if not steps[0] < step < steps[-1]:
        return math.nan
    right = bisect.bisect(steps, step)
    a, b = steps[right - 1], steps[right]
    t = (step - a) / (b - a)
    return (1 - t) * curve[a] + t * curve[b]


def _reference(names: list[str], grid: np.ndarray) -> dict[str, np.ndarray]:
    matrix = np.array([[_at(_curve(name), g) for g in grid] for name in names])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(matrix, axis=0, ddof=1)
        n = (~np.isnan(matrix)).sum(axis=0)
        std[n < 2] = np.nan
        return {
            "mean": np.nanmean(matrix, axis=0),
            "std": std,
            "min": np.nanmin(matrix, axis=0),
            "max": np.nanmax(matrix, axis=0),
            "n": n,
        }


GROUPS = {0.001: ["c-s0"], 0.01: ["b-s0", "b-s1"], 0.1: ["a-s0", "a-s1", "a-s2"], None: ["no-lr"]}


def test_groups_are_the_distinct_values_sorted_with_missing_last(store: runtel.Store) -> None:
    result = store.aggregate(METRIC, by=["params.lr"])
    assert [group.key for group in result.groups] == [(0.001,), (0.01,), (0.1,), (None,)]
    for group in result.groups:
        assert sorted(group.run_names) == sorted(GROUPS[group.key[0]])
    assert [(s.name, s.reason) for s in result.skipped] == [("other", f"has no metric {METRIC!r}")]
    assert result.group(None).label == "params.lr=—"


@pytest.mark.parametrize("lr", [0.001, 0.01, 0.1])
def test_the_union_grid_statistics_match_numpy(store: runtel.Store, lr: float) -> None:
    group = store.aggregate(METRIC, by=["params.lr"]).group(lr)
    names = list(group.run_names)
    union = sorted({step for name in names for step in _curve(name)})
    np.testing.assert_array_equal(group.step, union)
    expected = _reference(names, np.array(union, dtype=float))
    for stat in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(getattr(group, stat), expected[stat], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(group.n, expected["n"])


def test_a_nan_point_is_left_out_of_n_and_of_the_statistics(store: runtel.Store) -> None:
    group = store.aggregate(METRIC, by=["params.lr"]).group(0.1)
    step = list(group.step)
    # step 8: a-s0 and a-s1 count, a-s2 logged NaN there; step 9: a-s2 lies between NaN (8) and 0.71 (11)
    assert group.n[step.index(8)] == 2 and group.n[step.index(9)] == 2
    assert group.mean[step.index(8)] == pytest.approx(((0.5 + 0.16) + (0.4 + 0.2)) / 2, rel=1e-12)
    assert group.n[step.index(11)] == 3  # back in once both neighbours are finite


def test_a_run_counts_only_inside_its_own_step_range(store: runtel.Store) -> None:
    group = store.aggregate(METRIC, by=["params.lr"]).group(0.1)
    step = list(group.step)
    assert group.n[step.index(0)] == 1  # only a-s0 starts at 0
    assert group.n[step.index(30)] == 1  # only a-s1 reaches 30: nothing is extrapolated
    assert group.mean[step.index(30)] == pytest.approx(0.4 + 0.025 * 30, rel=1e-12)


def test_best_and_last_values_per_group_match_numpy(store: runtel.Store) -> None:
    result = store.aggregate(METRIC, by=["params.lr"])
    assert result.direction == "max"
    for key, names in GROUPS.items():
        group = result.group(key)
        best = np.array([np.nanmax([v for _, v in RUNS[name][2]]) for name in group.run_names])
        last = np.array([RUNS[name][2][-1][1] for name in group.run_names])
        for stats, values in ((group.best, best), (group.last, last)):
            np.testing.assert_array_equal(stats.values, values)
            assert stats.mean == pytest.approx(np.mean(values), rel=1e-12)
            assert stats.min == np.min(values) and stats.max == np.max(values) and stats.n == len(names)
            if len(names) > 1:
                assert stats.std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            else:
                assert math.isnan(stats.std)  # the sample std of one run is undefined


def test_a_group_of_one_run_is_that_run(store: runtel.Store) -> None:
    group = store.aggregate(METRIC, by=["params.lr"]).group(0.001)
    np.testing.assert_array_equal(group.step, [1, 4, 9])
    np.testing.assert_array_equal(group.mean, [0.1, 0.4, 0.2])
    np.testing.assert_array_equal(group.min, group.max)
    assert np.isnan(group.std).all() and (group.n == 1).all()
    assert store.aggregate(METRIC, by=["params.lr"], ddof=0).group(0.001).std.tolist() == [0.0] * 3


def test_a_step_logged_twice_keeps_its_last_value(store: runtel.Store) -> None:
    group = store.aggregate(METRIC, by=["name"]).group("b-s1")
    np.testing.assert_array_equal(group.step, [0, 10, 20, 30])
    np.testing.assert_array_equal(group.mean, [0.2, 0.65, 0.7, 0.9])


def test_a_regular_grid_interpolates_inside_each_run(store: runtel.Store) -> None:
    group = store.aggregate(METRIC, by=["params.lr"], grid=7).group(0.01)
    grid = np.linspace(0, 39 // 3 * 3, 7)
    np.testing.assert_allclose(group.step, grid)
    expected = _reference(["b-s0", "b-s1"], grid)
    np.testing.assert_allclose(group.mean, expected["mean"], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(group.n, expected["n"])


def test_an_explicit_grid_is_shared_by_every_group(store: runtel.Store) -> None:
    result = store.aggregate(METRIC, by=["params.lr"], grid=[0, 2.5, 10])
    for group in result.groups:
        np.testing.assert_array_equal(group.step, [0, 2.5, 10])
    expected = _reference(["a-s0", "a-s1", "a-s2"], np.array([0, 2.5, 10]))
    np.testing.assert_allclose(result.group(0.1).mean, expected["mean"], rtol=1e-12, equal_nan=True)


def test_grouping_by_two_fields_and_by_tags(store: runtel.Store) -> None:
    pairs = store.aggregate(METRIC, by=["params.lr", "params.opt"])
    assert sorted(pairs.group(0.1, "adam").run_names) == ["a-s0", "a-s2"]
    assert pairs.group(0.1, "sgd").run_names == ("a-s1",)
    assert pairs.group(0.1, "adam").label == "params.lr=0.1, params.opt=adam"
    tags = store.aggregate(METRIC, by=["tags"])
    assert [group.key for group in tags.groups] == [((),), (("base",),), (("base", "x"),)]
    assert sorted(tags.group(("base",)).run_names) == ["a-s0", "a-s1", "c-s0"]


def test_no_fields_is_one_group_of_every_run(store: runtel.Store) -> None:
    (group,) = store.aggregate(METRIC).groups
    assert group.label == "all runs" and len(group.run_ids) == len(RUNS)


def test_the_frame_has_one_row_per_group_and_step(store: runtel.Store) -> None:
    result = store.aggregate(METRIC, by=["params.lr"])
    frame = result.to_frame()
    assert list(frame.columns) == ["params.lr", "step", "mean", "std", "min", "max", "n"]
    assert len(frame) == sum(group.step.size for group in result.groups)
    rows = frame[frame["params.lr"] == 0.01]
    np.testing.assert_array_equal(rows["mean"].to_numpy(), result.group(0.01).mean)
    assert frame["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("by", "grid", "ddof", "message"),
    [
        ([3], "union", 1, "a group-by field is a string"),
        (["name", "name"], "union", 1, "repeat"),
        ([], "steps", 1, "grid must be 'union'"),
        ([], 0, 1, "grid of 0 points"),
        ([], [1.0, math.nan], 1, "finite numbers"),
        ([], "union", -1, "ddof must be a non-negative integer"),
    ],
)
def test_bad_arguments_are_named(
    store: runtel.Store, by: list[str], grid: Any, ddof: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        store.aggregate(METRIC, by=by, grid=grid, ddof=ddof)


@pytest.mark.parametrize("field", ["params.", "lr", "params.lr < 1"])
def test_a_field_outside_the_filter_grammar_is_a_syntax_error(store: runtel.Store, field: str) -> None:
    with pytest.raises(FilterSyntaxError, match=r"\^"):  # the message points at the column
        store.aggregate(METRIC, by=[field])


def test_where_chooses_the_runs_before_grouping(store: runtel.Store) -> None:
    result = store.aggregate(METRIC, by=["params.lr"], where="params.opt = 'adam' and params.lr >= 0.01")
    assert [(group.key, sorted(group.run_names)) for group in result.groups] == [
        ((0.01,), ["b-s0"]),
        ((0.1,), ["a-s0", "a-s2"]),
    ]
    expected = _reference(["a-s0", "a-s2"], result.group(0.1).step)
    np.testing.assert_allclose(result.group(0.1).mean, expected["mean"], rtol=1e-12, equal_nan=True)


def test_nested_params_and_metric_fields_group_by_their_filter_names(tmp_path: Path) -> None:
    for index, name in enumerate(["adam", "sgd", "adam"]):
        config = {"optimizer": {"name": name, "betas": [0.9, 0.99]}}
        with runtel.init(name=f"r{index}", base_dir=str(tmp_path), config=config, system_interval=0) as run:
            run.log({METRIC: float(index)}, step=0)
    store = runtel.Store(tmp_path)
    by_name = store.aggregate(METRIC, by=["params.optimizer.name", "params.optimizer.betas"])
    assert [group.key for group in by_name.groups] == [("adam", (0.9, 0.99)), ("sgd", (0.9, 0.99))]
    assert by_name.group("adam", (0.9, 0.99)).mean.tolist() == [1.0]
    by_metric = store.aggregate(METRIC, by=["metrics['val/acc'].last"])
    assert [group.key for group in by_metric.groups] == [(0.0,), (1.0,), (2.0,)]


def test_a_boolean_param_is_not_grouped_with_the_number_equal_to_it(tmp_path: Path) -> None:
    for index, flag in enumerate([True, 1, False, 0, True]):
        with runtel.init(
            name=f"r{index}", base_dir=str(tmp_path), config={"flag": flag}, system_interval=0
        ) as run:
            run.log({METRIC: float(index)}, step=0)
    result = runtel.Store(tmp_path).aggregate(METRIC, by=["params.flag"])
    keys = [group.key for group in result.groups]
    assert [(type(value), value) for (value,) in keys] == [(bool, False), (bool, True), (int, 0), (int, 1)]
    assert result.group(True).n.tolist() == [2] and result.group(True).mean.tolist() == [2.0]
    assert result.group(1).n.tolist() == [1] and result.group(1).mean.tolist() == [1.0]


def test_a_grid_too_large_for_memory_asks_for_a_number_of_points(
    store: runtel.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtel.store.aggregate.MAX_CELLS", 3 * 26 - 1)  # lr 0.1: 3 runs, 26 union steps
    with pytest.raises(ConfigError, match=r"would put 3 runs on 26 grid steps .* pass grid=N"):
        store.aggregate(METRIC, by=["params.lr"])
    assert store.aggregate(METRIC, by=["params.lr"], grid=20).group(0.1).step.size == 20


def test_a_damaged_run_is_skipped_with_its_reason(store: runtel.Store, tmp_path: Path) -> None:
    base = tmp_path / "runs"
    for seed in range(2):
        with runtel.init(name=f"s{seed}", base_dir=str(base), config={"lr": 0.1}, system_interval=0) as run:
            run.log({METRIC: 0.5 + seed}, step=0)
    damaged = runtel.Store(base).runs()[1]
    (damaged.dir / "hyperparameters.json").write_text("{not json")
    result: Aggregate = aggregate(runtel.Store(base).runs(), METRIC, ["params.lr"])
    assert [group.run_names for group in result.groups] == [("s0",)]
    ((name, reason),) = [(item.name, item.reason) for item in result.skipped]
    assert name == "s1" and "hyperparameters.json" in reason


# ---- runtel ls --group-by


def test_ls_group_by_prints_best_value_statistics_as_json(
    store: runtel.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ls", "--base-dir", str(store.base_dir), "--group-by", "params.lr", "--metric", METRIC, "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["skipped"] == [] and printed["unreadable"] == []
    (document,) = printed["aggregates"]
    assert document["metric"] == METRIC and document["by"] == ["params.lr"] and document["direction"] == "max"
    assert [row["params.lr"] for row in document["groups"]] == [0.001, 0.01, 0.1, None]
    row = document["groups"][2]
    best = [np.nanmax([v for _, v in RUNS[name][2]]) for name in GROUPS[0.1]]
    assert row["runs"] == 3 and row["best_n"] == 3
    assert row["best_mean"] == pytest.approx(np.mean(best), rel=1e-12)
    assert row["best_std"] == pytest.approx(np.std(best, ddof=1), rel=1e-12)
    assert (row["best_min"], row["best_max"]) == (min(best), max(best))
    assert document["groups"][0]["best_std"] is None  # NaN (one run) is JSON null
    assert [item["name"] for item in document["skipped"]] == ["other"]


def test_ls_group_by_prints_mean_plus_minus_std_per_group(
    store: runtel.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ls", "--base-dir", str(store.base_dir), "--group-by", "params.lr", "--metric", METRIC]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == f"{METRIC} by params.lr: 4 groups of {len(RUNS) + 1} runs (best = max, std with ddof=1)"
    )
    assert lines[1].split() == [
        "params.lr",
        "runs",
        "n",
        "best",
        "mean",
        "±",
        "std",
        "min",
        "max",
        "last",
        "mean",
        "±",
        "std",
    ]
    best = [np.nanmax([v for _, v in RUNS[name][2]]) for name in GROUPS[0.1]]
    row = next(line for line in lines if line.startswith("0.1 "))
    assert f"{np.mean(best):.6g} ± {np.std(best, ddof=1):.6g}" in row
    single = next(line for line in lines if line.startswith("0.001 "))
    assert single.split()[:5] == ["0.001", "1", "1", "0.4", "0.4"]  # one run: no ± part
    assert lines[-1] == f"skipped other ({store.run('other').id[:8]}): has no metric {METRIC!r}"


def test_ls_group_by_keeps_the_listing_filters(
    store: runtel.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ls", "--base-dir", str(store.base_dir), "--group-by", "params.lr,params.opt", "--metric", METRIC]
    assert main([*argv, "--tag", "base", "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["aggregates"][0]["groups"]
    assert [(row["params.lr"], row["params.opt"], row["runs"]) for row in groups] == [
        (0.001, "adam", 1),
        (0.1, "adam", 2),
        (0.1, "sgd", 1),
    ]


def test_ls_group_by_takes_where(store: runtel.Store, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ls", "--base-dir", str(store.base_dir), "--group-by", "params.lr", "--metric", METRIC, "--json"]
    assert main([*argv, "--where", "params.seed = 0"]) == 0
    groups = json.loads(capsys.readouterr().out)["aggregates"][0]["groups"]
    assert [(row["params.lr"], row["runs"]) for row in groups] == [(0.001, 1), (0.01, 1), (0.1, 1)]
    assert main([*argv, "--sort", "name"]) == 1
    assert "drop --sort" in capsys.readouterr().err


def test_ls_group_by_without_a_metric_names_the_flag(
    store: runtel.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--base-dir", str(store.base_dir), "--group-by", "params.lr"]) == 1
    assert "add --metric NAME" in capsys.readouterr().err
