"""The filter language against a store of 240 real runs: every operator and field checked against a
plain-Python filter of the same runs; syntax errors point at the column; hostile input is refused."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtel
from runtel.errors import FilterSyntaxError
from runtel.store.query import Store, StoredRun
from runtel.store.where import MISSING, compile_where, field_reader, sort_key, sort_runs

RUNS = 240
OPTIMIZERS = ("adam", "sgd", "adamw")
PROJECTS = ("mnist", "cifar", "imdb")


@dataclass
class Truth:
    """What the test logged for one run, kept beside the store to filter in plain Python."""

    name: str
    project: str
    status: str
    tags: list[str]
    params: dict[str, Any]
    metrics: dict[str, list[float]] = field(default_factory=dict)
    id: str = ""
    start_time: float = 0.0
    duration: float | None = None

    def stat(self, metric: str, stat: str) -> float | None:
        """min/max skip NaN as the store's summary does; None when the metric was not logged."""
        values = self.metrics.get(metric)
        if not values:
            return None
        finite = [v for v in values if not math.isnan(v)]
        if stat == "last":
            return values[-1]
        if stat == "count":
            return len(values)
        if stat == "min":
            return min(finite) if finite else math.nan
        return max(finite) if finite else math.nan


@dataclass
class Population:
    store: Store
    truths: dict[str, Truth]
    live: runtel.Run


def _params(rng: random.Random, i: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "lr": rng.choice((1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1)),
        "seed": i % 5,
        "optimizer": {"name": OPTIMIZERS[i % 3], "beta": rng.choice((0.9, 0.95, 0.99))},
        "batch-size": rng.choice((16, 32, 64, 128)),
        "layers": rng.choice(([64, 64], [128], [64, 64, 32])),
        "shift": rng.choice((-2, -1, 0, 1.5)),
        "note": None if i % 7 == 0 else "plain",
    }
    if i % 4 == 0:
        params["use_amp"] = i % 8 == 0
    if i % 6 == 0:
        params["width"] = "wide" if i % 12 == 0 else 16 * (i % 5)
    if i % 10 == 3:
        del params["lr"]
    return params


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Population]:
    base = tmp_path_factory.mktemp("where-store")
    rng = random.Random(14)
    truths: dict[str, Truth] = {}
    for i in range(RUNS):
        tags = [tag for tag, every in (("baseline", 3), ("draft", 5), ("sweep", 2)) if i % every == 0]
        truth = Truth(f"run-{i:03d}", PROJECTS[i % 3], "completed", tags, _params(rng, i))
        run = runtel.init(
            project=truth.project,
            name=truth.name,
            base_dir=str(base),
            config=truth.params,
            tags=tags,
            system_interval=0,
        )
        steps = 3 + i % 4
        for step in range(steps):
            point = {"train/loss": rng.uniform(0.01, 2.0), "val/acc": rng.uniform(0.5, 1.0)}
            if i % 9 == 0 and step == steps - 1:
                point["train/loss"] = math.nan
            if i % 11 == 0:
                point["loss"] = 1.0 / (step + 1)
            if i % 13 != 0:
                for name, value in point.items():
                    truth.metrics.setdefault(name, []).append(value)
                run.log(point, step=step)
        if i % 17 == 0:
            truth.status = "failed"
        elif i % 19 == 0:
            truth.status = "killed"
        run.finish(truth.status)
        truth.id = run.id
        truths[run.id] = truth
    live = runtel.init(
        project="mnist", name="live-run", base_dir=str(base), tags=["baseline"], system_interval=0
    )
    live.log_params({"lr": 1e-5})
    live.log({"val/acc": 0.99}, step=0)
    assert live.flush(timeout=30)
    live_truth = Truth("live-run", "mnist", "running", ["baseline"], {"lr": 1e-5}, {})
    live_truth.id = live.id
    truths[live.id] = live_truth
    store = Store(base)
    for run in store.runs():
        truths[run.id].start_time = run.metadata["start_time"]
        truths[run.id].duration = run.metadata.get("duration")
    yield Population(store, truths, live)
    live.finish()


def _param(truth: Truth, *keys: str) -> Any:
    value: Any = truth.params
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise KeyError(key)
        value = value[key]
    return value


def _has(truth: Truth, *keys: str) -> bool:
    try:
        _param(truth, *keys)
    except KeyError:
        return False
    return True


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stat(truth: Truth, metric: str, stat: str) -> float:
    value = truth.stat(metric, stat)
    if value is None or truth.status == "running":
        raise KeyError(metric)
    return value


def _safe(check: Callable[[Truth], bool]) -> Callable[[Truth], bool]:
    """Missing values (a KeyError while reading the truth) fail the condition, as the grammar says."""

    def run(truth: Truth) -> bool:
        try:
            return bool(check(truth))
        except KeyError:
            return False

    return run


# Each expression beside the same condition in plain Python over the logged truth.
CASES: list[tuple[str, Callable[[Truth], bool]]] = [
    ("name = 'run-007'", lambda t: t.name == "run-007"),
    ("name == 'run-007'", lambda t: t.name == "run-007"),
    ("name != 'run-007'", lambda t: t.name != "run-007"),
    ("name < 'run-050'", lambda t: t.name < "run-050"),
    ("name >= 'run-200'", lambda t: t.name >= "run-200"),
    ("'-01' in name", lambda t: "-01" in t.name),
    ("'-01' not in name", lambda t: "-01" not in t.name),
    ("name in ('run-001', 'run-002', 'nope')", lambda t: t.name in ("run-001", "run-002")),
    ("project = 'mnist'", lambda t: t.project == "mnist"),
    ("project in ['mnist', 'imdb']", lambda t: t.project in ("mnist", "imdb")),
    ("project not in ('mnist',)", lambda t: t.project != "mnist"),
    ("status = 'completed'", lambda t: t.status == "completed"),
    ("status in ('failed', 'killed')", lambda t: t.status in ("failed", "killed")),
    ("status != 'completed'", lambda t: t.status != "completed"),
    ("status = 'running'", lambda t: t.status == "running"),
    ("'baseline' in tags", lambda t: "baseline" in t.tags),
    ("'draft' not in tags", lambda t: "draft" not in t.tags),
    ("'baseline' in tags and 'sweep' in tags", lambda t: {"baseline", "sweep"} <= set(t.tags)),
    ("tags = ('baseline', 'draft', 'sweep')", lambda t: t.tags == ["baseline", "draft", "sweep"]),
    ("not tags", lambda t: not t.tags),
    ("params.lr < 1e-3", _safe(lambda t: _param(t, "lr") < 1e-3)),
    ("params.lr <= 1e-3", _safe(lambda t: _param(t, "lr") <= 1e-3)),
    ("params.lr > 0.001", _safe(lambda t: _param(t, "lr") > 1e-3)),
    ("params.lr >= 3E-3", _safe(lambda t: _param(t, "lr") >= 3e-3)),
    ("params.lr = 0.1", _safe(lambda t: _param(t, "lr") == 0.1)),
    ("params.lr != 0.1", _safe(lambda t: _param(t, "lr") != 0.1)),
    ("1e-4 < params.lr <= 3e-3", _safe(lambda t: 1e-4 < _param(t, "lr") <= 3e-3)),
    ("not params.lr < 1e-3", lambda t: not (_has(t, "lr") and _param(t, "lr") < 1e-3)),
    ("params.seed in (0, 1)", _safe(lambda t: _param(t, "seed") in (0, 1))),
    ("params.seed not in (0, 1)", _safe(lambda t: _param(t, "seed") not in (0, 1))),
    ("params.seed = 2.0", _safe(lambda t: _param(t, "seed") == 2)),
    ("params.optimizer.name = 'adam'", _safe(lambda t: _param(t, "optimizer", "name") == "adam")),
    ("params['optimizer']['name'] != 'adam'", _safe(lambda t: _param(t, "optimizer", "name") != "adam")),
    ("params.optimizer.beta >= 0.95", _safe(lambda t: _param(t, "optimizer", "beta") >= 0.95)),
    ("'beta' in params.optimizer", _safe(lambda t: "beta" in _param(t, "optimizer"))),
    ("params['batch-size'] > 32", _safe(lambda t: _param(t, "batch-size") > 32)),
    ("params.layers = [64, 64]", _safe(lambda t: _param(t, "layers") == [64, 64])),
    ("64 in params.layers", _safe(lambda t: 64 in _param(t, "layers"))),
    ("params.shift < -1", _safe(lambda t: _param(t, "shift") < -1)),
    ("params.shift = +1.5", _safe(lambda t: _param(t, "shift") == 1.5)),
    ("-params.shift > 1", _safe(lambda t: -_param(t, "shift") > 1)),
    ("params.use_amp = True", _safe(lambda t: _param(t, "use_amp") is True)),
    ("params.use_amp = False", _safe(lambda t: _param(t, "use_amp") is False)),
    ("params.use_amp", _safe(lambda t: _param(t, "use_amp") is True)),
    ("params.use_amp = 1", lambda t: False),  # booleans are not numbers
    ("params.note = None", _safe(lambda t: _param(t, "note") is None)),
    ("params.note != None", _safe(lambda t: _param(t, "note") is not None)),
    ("params.width > 20", _safe(lambda t: _num(_param(t, "width")) and _param(t, "width") > 20)),
    ("params.width = 'wide'", _safe(lambda t: _param(t, "width") == "wide")),
    ("params.missing = 1 or params.missing != 1", lambda t: False),
    ("metrics['val/acc'].max > 0.9", _safe(lambda t: _stat(t, "val/acc", "max") > 0.9)),
    ("metrics['val/acc'].min < 0.6", _safe(lambda t: _stat(t, "val/acc", "min") < 0.6)),
    ("metrics['val/acc'].best >= 0.95", _safe(lambda t: _stat(t, "val/acc", "max") >= 0.95)),
    ("metrics['train/loss'].best < 0.2", _safe(lambda t: _stat(t, "train/loss", "min") < 0.2)),
    ("metrics['train/loss'].last < 1", _safe(lambda t: _stat(t, "train/loss", "last") < 1)),
    ("metrics['train/loss'].last >= 1", _safe(lambda t: _stat(t, "train/loss", "last") >= 1)),
    ("metrics['val/acc'].count = 5", _safe(lambda t: _stat(t, "val/acc", "count") == 5)),
    ("metrics['val/acc'].last_step = 3", _safe(lambda t: _stat(t, "val/acc", "count") == 4)),
    ("metrics.loss.last < 0.3", _safe(lambda t: _stat(t, "loss", "last") < 0.3)),
    ("metrics.loss.count > 0", _safe(lambda t: _stat(t, "loss", "count") > 0)),
    (
        "metrics['val/acc'].max > metrics['val/acc'].last",
        _safe(lambda t: _stat(t, "val/acc", "max") > _stat(t, "val/acc", "last")),
    ),
    ("start_time > 0", lambda t: t.start_time > 0),
    ("start_time < '2000-01-01'", lambda t: False),
    ("start_time > '2000-01-01T00:00:00+00:00'", lambda t: t.start_time > 946684800.0),
    ("duration >= 0", lambda t: (t.duration is not None and t.duration >= 0) or t.status == "running"),
    (
        "params.optimizer.name = 'adam' and metrics['val/acc'].max > 0.9 and 'baseline' in tags",
        _safe(
            lambda t: (
                _param(t, "optimizer", "name") == "adam"
                and _stat(t, "val/acc", "max") > 0.9
                and "baseline" in t.tags
            )
        ),
    ),
    (
        "(project = 'mnist' or project = 'imdb') and not (status = 'failed' or 'draft' in tags)",
        lambda t: t.project in ("mnist", "imdb") and not (t.status == "failed" or "draft" in t.tags),
    ),
    ("True", lambda t: True),
    ("False or None", lambda t: False),
    (
        "id = 'nope' or 'run' in name and params.seed = 4",
        _safe(lambda t: "run" in t.name and _param(t, "seed") == 4),
    ),
]


@pytest.mark.parametrize(("expression", "check"), CASES, ids=[case[0] for case in CASES])
def test_where_matches_a_plain_python_filter(
    population: Population, expression: str, check: Callable[[Truth], bool]
) -> None:
    found = [run.id for run in population.store.runs(where=expression)]
    expected = [run.id for run in population.store.runs() if check(population.truths[run.id])]
    assert found == expected
    selects = "none" if not expected else "all" if len(expected) == RUNS + 1 else "some"
    assert selects == _BY_DESIGN.get(expression, "some"), "a case must tell runs apart"


#: Cases that select no run or every run on purpose (the rest must select some runs, not all).
_BY_DESIGN = {
    "params.use_amp = 1": "none",
    "params.missing = 1 or params.missing != 1": "none",
    "start_time < '2000-01-01'": "none",
    "False or None": "none",
    "start_time > 0": "all",
    "start_time > '2000-01-01T00:00:00+00:00'": "all",
    "True": "all",
    "duration >= 0": "all",
}


def test_the_store_holds_the_variety_the_cases_rely_on(population: Population) -> None:
    truths = population.truths.values()
    assert len(population.store.runs()) == RUNS + 1
    assert {t.status for t in truths} == {"completed", "failed", "killed", "running"}
    assert any(math.isnan(t.metrics["train/loss"][-1]) for t in truths if "train/loss" in t.metrics)
    assert sum(not t.metrics for t in truths) > 10  # runs without any metric


def test_a_live_run_has_no_metric_stats_yet(population: Population) -> None:
    assert [
        run.name for run in population.store.runs(where="metrics['val/acc'].count >= 1 and params.lr = 1e-5")
    ] == []
    assert [run.name for run in population.store.runs(where="params.lr = 1e-5")] == ["live-run"]


def test_a_compiled_filter_is_reused_and_matches_one_run(population: Population) -> None:
    chosen = compile_where("params.seed = 3 and project = 'cifar'")
    runs = population.store.runs()
    matching = [run.id for run in runs if chosen.matches(run)]
    assert [run.id for run in population.store.runs(where=chosen)] == matching and len(matching) > 3
    assert chosen.text == "params.seed = 3 and project = 'cifar'"


def test_sort_by_a_metric_descending_puts_runs_without_it_last(population: Population) -> None:
    ordered = population.store.runs(sort="metrics['val/acc'].max", desc=True)

    def best(run: StoredRun) -> float | None:
        truth = population.truths[run.id]
        return None if truth.status == "running" else truth.stat("val/acc", "max")

    values = [best(run) for run in ordered]
    count = sum(value is not None for value in values)
    assert count > 100 and values[:count] == sorted(values[:count], reverse=True)  # type: ignore[type-var]
    assert all(value is None for value in values[count:])


def test_sort_by_a_param_with_mixed_kinds_is_total(population: Population) -> None:
    ordered = sort_runs(population.store.runs(), "params.width")
    widths = [population.truths[run.id].params.get("width") for run in ordered]
    numbers = [w for w in widths if _num(w)]
    assert widths[: len(numbers)] == sorted(numbers)
    assert widths[len(numbers) : len(numbers) + widths.count("wide")] == ["wide"] * widths.count("wide")
    assert all(w is None for w in widths[len(numbers) + widths.count("wide") :])
    key = sort_key("name")
    assert sorted(population.store.runs(), key=key)[0].name == "live-run"


def test_sort_by_name_ascending_and_start_time(population: Population) -> None:
    names = [run.name for run in population.store.runs(sort="name")]
    assert names == sorted(names)
    newest = population.store.runs(desc=True)
    assert newest[0].name == "live-run" and newest[-1].name == "run-000"


@pytest.mark.parametrize(
    ("expression", "column", "problem"),
    [
        ("status = 'completed' and", 25, "ends before it is complete"),
        ("params.lr <", 12, "ends before it is complete"),
        ("params.lr < 1 2", 15, "invalid syntax"),
        ("name = 'abc", 8, "unterminated string"),
        ("(project = 'mnist'", 1, "was never closed"),
        ("nme = 'x'", 1, "unknown field 'nme'"),
        ("status = 'a' and projct = 'b'", 18, "unknown field 'projct'"),
        ("metrics['val/acc'].maximum > 1", 1, "unknown metric stat 'maximum'"),
        ("metrics['val/acc'] > 1", 1, "needs a stat"),
        ("params > 1", 1, "params needs a key"),
        ("  name = 'é' and x = 1", 18, "unknown field 'x'"),
        ("name is None", 1, "write == None"),
        ("params.lr + 1 > 2", 11, "arithmetic"),
        ("params.lr >> 0.05", 11, "arithmetic"),
        ("(name = 'a') = True", 2, "a condition cannot be compared"),
        ("", None, "the filter is empty"),
    ],
)
def test_errors_name_the_column(expression: str, column: int | None, problem: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        compile_where(expression)
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, runtel.RuntelError)
    assert problem in error.problem and error.column == column, str(error)
    if column is not None:
        lines = str(error).splitlines()
        assert f"at column {column}" in lines[0]
        assert lines[1] == f"  {expression}" and lines[2] == "  " + " " * (column - 1) + "^"


@pytest.mark.parametrize(
    "expression",
    [
        "name.__class__ = 'x'",
        "name.upper() = 'X'",
        "__import__('os').system('true')",
        "(lambda: 1)() = 1",
        "[x for x in tags] = []",
        "{t for t in tags}",
        "tags[0] = 'baseline'",
        "metrics[0].max > 1",
        "metrics[name].max > 1",
        "params.lr.__class__.__mro__ = 1",  # refused? no: keys of params are looked up in JSON only
        "name[::-1] = 'x'",
        "(x := 1)",
        "f'{name}' = 'x'",
        "b'x' in name",
        "1j = 1",
        "... = 1",
        "*tags",
        "open('/etc/passwd')",
        "{'a': 1} = params",
        "1 if True else 2",
    ],
)
def test_hostile_expressions_are_refused_or_harmless(expression: str, base_dir: Path) -> None:
    if expression.startswith("params.lr.__class__"):
        assert compile_where(expression).matches(_one_run(base_dir)) is False
        return
    with pytest.raises(FilterSyntaxError):
        compile_where(expression)


def _one_run(base_dir: Path) -> StoredRun:
    with runtel.init(project="p", name="one", base_dir=str(base_dir), config={"lr": 0.1}, system_interval=0):
        pass
    return Store(base_dir).runs()[0]


def test_field_reader_gives_the_value_or_missing(population: Population) -> None:
    runs = population.store.runs()
    lr = field_reader("params.lr")
    assert [lr(run) for run in runs] == [population.truths[run.id].params.get("lr", MISSING) for run in runs]
    acc = field_reader("metrics['val/acc'].last")
    truths = [population.truths[run.id] for run in runs]
    expected = [
        MISSING if t.status == "running" or not t.metrics else t.metrics["val/acc"][-1] for t in truths
    ]
    assert [acc(run) for run in runs] == expected


def test_sort_key_takes_one_field_only() -> None:
    with pytest.raises(FilterSyntaxError, match="a field is one name"):
        sort_key("params.lr < 1")
    with pytest.raises(FilterSyntaxError, match="unknown field"):
        sort_key("lr")


def test_a_filter_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(FilterSyntaxError, match="got int"):
        compile_where(5)  # type: ignore[arg-type]


def test_keys_with_dots_and_damaged_files_read_as_missing(base_dir: Path) -> None:
    with runtel.init(
        project="p", name="dots", base_dir=str(base_dir), config={"opt.lr": 0.5}, system_interval=0
    ):
        pass
    with runtel.init(
        project="p", name="damaged", base_dir=str(base_dir), config={"opt": {"lr": 0.5}}, system_interval=0
    ) as run:
        run.log({"loss": 1.0})
    store = Store(base_dir)
    assert [r.name for r in store.runs(where="params.opt.lr = 0.5")] == ["dots", "damaged"]
    damaged = store.run("damaged")
    (damaged.dir / "hyperparameters.json").write_text("{not json")
    (damaged.dir / "summary.json").write_text("[1, 2]")
    assert [r.name for r in store.runs(where="params.opt.lr = 0.5")] == ["dots"]
    assert store.runs(where="metrics.loss.count = 1") == []
    unreadable: list[tuple[str, str]] = []
    assert compile_where("not metrics.loss.count = 1").select(store.runs(), unreadable)[-1].name == "damaged"
    assert unreadable == [(damaged.dir.name, "summary.json holds a JSON array, not a JSON object")]


@pytest.mark.parametrize(
    "expression",
    [
        "not " * 5000 + "True",
        "- " * 5000 + "1 = 1",
        "params." + ".".join(["a"] * 5000) + " = 1",
        "1" * 10_001,
    ],
)
def test_huge_or_deeply_nested_input_is_a_filter_error(expression: str) -> None:
    with pytest.raises(FilterSyntaxError, match=r"nested too deeply|over the 10,000"):
        compile_where(expression)


def test_nesting_over_the_depth_limit_points_at_the_first_level_too_deep() -> None:
    compile_where("not " * 99 + "True")
    with pytest.raises(FilterSyntaxError, match="nested too deeply") as caught:
        compile_where("not " * 100 + "True")
    assert caught.value.column == 401
    with pytest.raises(FilterSyntaxError, match="nested too deeply"):
        compile_where("params." + ".".join(["a"] * 120) + " = 1")


def test_a_filter_matched_with_little_stack_left_is_a_filter_error(tmp_path: Path) -> None:
    with runtel.init(name="r", base_dir=str(tmp_path), system_interval=0) as run:
        run.log({"loss": 1.0})
    runs = Store(tmp_path).runs()
    deep = compile_where("not " * 97 + "-1 = 1")

    def at_depth(left: int) -> None:
        if left:
            at_depth(left - 1)
            return
        with pytest.raises(FilterSyntaxError, match="nested too deeply"):
            deep.select(runs)
        with pytest.raises(FilterSyntaxError, match="nested too deeply"):
            deep.matches(runs[0])

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        at_depth(120)
    finally:
        sys.setrecursionlimit(limit)


_GRAMMAR_BITS = [
    "name",
    "tags",
    "status",
    "params.lr",
    "params['a-b']",
    "metrics['val/acc'].max",
    "metrics.loss.best",
    "start_time",
    "duration",
    "'baseline'",
    "'2026-11-30'",
    "1e-3",
    "-2",
    "True",
    "None",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "==",
    "!=",
    "<",
    ">=",
    " in ",
    " not ",
    " and ",
    " or ",
    ".",
    "__class__",
    "(x)",
    "'",
    "é",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_GRAMMAR_BITS), min_size=1, max_size=12).map(" ".join))
def test_any_text_compiles_or_is_a_filter_error_and_matching_never_raises(
    population: Population, expression: str
) -> None:
    try:
        chosen = compile_where(expression)
    except FilterSyntaxError as exc:
        assert exc.column is None or 1 <= exc.column <= len(expression) + 1
        return
    for run in population.store.runs()[:40]:
        assert chosen.matches(run) in (True, False)
