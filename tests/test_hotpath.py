"""``run.log``'s two implementations: the C extension (``runtel._hotpath_c``) and its pure-Python twin.

The C version takes the common case itself and hands anything else to the Python general path, so
the tests here drive both sides of that line and check that what is stored is exactly what was
logged, in the same way under either implementation (``RUNTEL_PURE_PYTHON=1`` chooses the twin).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel import Store
from runtel._hotpath import ACCELERATED
from runtel.errors import (
    InvalidMetricError,
    InvalidNameError,
    InvalidStepError,
    InvalidValueError,
    RunFinishedError,
)
from runtel.records import SERIES_DTYPE, MetricPoints
from runtel.store.writer import _to_block
from tests.test_exporter_isolation import CollectingExporter

PURE = os.environ.get("RUNTEL_PURE_PYTHON", "") not in ("", "0")

#: Logs a mix of calls on both sides of the C fast path's line, then prints every stored series.
_SCRIPT = r"""
import json, math, sys
import numpy as np
import runtel
from runtel import Store

base = sys.argv[1]
run = runtel.init(project="twins", base_dir=base, system_interval=0)
names = ["loss", "acc"]
for i in range(3000):
    run.log({names[0]: 1.0 / (i + 1), names[1]: i})  # float and int, one layout
    if i % 10 == 0:
        run.log({f"layer{i % 3}/grad": float(i)})  # keys built per call: new str objects
    if i % 97 == 0:
        run.log({"loss": np.float32(0.5), "flag": True})  # numpy scalar and bool: general path
    if i % 500 == 0:
        run.log({"big": 2**53, "small": -(2**53)})  # the largest ints float64 holds exactly
with run.span("validate"):
    run.log({"val/loss": float("nan"), "val/acc": float("inf")}, step=5000)
    run.log({"val/loss": -0.0, "val/acc": -float("inf")})
run.log({"loss": 3.0}, 7000)
run.log({"wide/" + str(k): float(k) for k in range(300)})  # wider than the C fast path takes
run.log({"after": 1.0})
run_id = run.id
run.finish()
stored = Store(base).run(run_id)
out = {}
for name in sorted(stored.metrics()):
    steps, _, values = stored.history(name)
    out[name] = [steps.tolist(), [repr(v) for v in values.tolist()]]
print(json.dumps(out))
"""


def _stored_by(implementation: str, base: Path) -> dict[str, list[list[object]]]:
    env = {**os.environ, "RUNTEL_PURE_PYTHON": "1" if implementation == "python" else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(base)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, list[list[object]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_c_extension_is_built() -> None:
    """CI and a normal install compile it; only an explicit RUNTEL_PURE_PYTHON=1 runs without it."""
    if PURE:
        assert not ACCELERATED
    else:
        assert ACCELERATED, (
            "runtel._hotpath_c is not built: install a C compiler and reinstall runtel "
            "(pip install -e .), or set RUNTEL_PURE_PYTHON=1 to test the pure-Python twin"
        )


def test_both_implementations_store_exactly_the_same(tmp_path: Path) -> None:
    c_side = _stored_by("c", tmp_path / "c")
    python_side = _stored_by("python", tmp_path / "python")
    assert c_side == python_side
    steps = c_side["loss"][0]
    assert len(steps) == 3000 + 31 + 1 and steps == sorted(steps)
    assert c_side["big"][1] == [repr(float(2**53))] * 6 and c_side["small"][1] == [repr(-float(2**53))] * 6
    assert c_side["val/loss"] == [[5000, 5001], ["nan", "-0.0"]]
    assert c_side["val/acc"] == [[5000, 5001], ["inf", "-inf"]]
    assert c_side["loss"][0][-1] == 7000 and c_side["after"][0] == [7002]
    assert len([name for name in c_side if name.startswith("wide/")]) == 300
    assert c_side["wide/299"] == [[7001], ["299.0"]]


def test_a_refused_call_records_nothing_and_keeps_the_step(tmp_path: Path) -> None:
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    run.log({"loss": 1.0})
    bad_calls = [
        ({"loss": "high"}, None, InvalidMetricError),
        ({"loss": 2**53 + 1}, None, InvalidValueError),
        ({"loss": 1.0, 3: 2.0}, None, InvalidNameError),
        ({"": 1.0}, None, InvalidNameError),
        ({"loss": 1.0}, -1, InvalidStepError),
        ({"loss": 1.0}, 1.5, InvalidStepError),
        ({"loss": 1.0}, 2**63, InvalidStepError),
    ]
    for metrics, step, error in bad_calls:
        with pytest.raises(error):
            run.log(metrics, step=step)
        assert run._last_step == 0, f"{metrics!r} at {step!r} moved the step"
    with pytest.raises(InvalidMetricError):
        run.log(["loss", 1.0])  # type: ignore[arg-type]
    run.log({"loss": 2.0})
    run_id = run.id
    run.finish()
    with pytest.raises(RunFinishedError):
        run.log({"loss": 3.0})
    steps, _, values = Store(str(tmp_path)).run(run_id).history("loss")
    assert steps.tolist() == [0, 1] and values.tolist() == [1.0, 2.0]


def test_no_implicit_step_is_left_after_the_largest_int64(tmp_path: Path) -> None:
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    run.log({"x": 1.0}, step=2**63 - 1)
    with pytest.raises(InvalidStepError, match="largest int64"):
        run.log({"x": 2.0})
    run.finish()


def test_implicit_steps_stay_unique_across_threads(tmp_path: Path) -> None:
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    per_thread, threads = 20_000, 4

    def work(k: int) -> None:
        row = {"x": float(k)}
        for _ in range(per_thread):
            run.log(row)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    run_id = run.id
    run.finish()
    steps, _, values = Store(str(tmp_path)).run(run_id).history("x")
    assert sorted(steps.tolist()) == list(range(per_thread * threads))
    assert sorted(np.bincount(values.astype(np.int64)).tolist()) == [per_thread] * threads


def test_a_mapping_that_is_not_a_dict_takes_the_general_path(tmp_path: Path) -> None:
    from collections import OrderedDict
    from types import MappingProxyType

    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    run.log(OrderedDict(a=1.0, b=2.0))
    run.log(MappingProxyType({"a": 3.0}), step=10)
    run.log(metrics={"a": 4.0})
    run_id = run.id
    run.finish()
    steps, _, values = Store(str(tmp_path)).run(run_id).history("a")
    assert steps.tolist() == [0, 10, 11] and values.tolist() == [1.0, 3.0, 4.0]


def test_records_keep_their_place_between_points(tmp_path: Path) -> None:
    """A span's step range and the points around it: records are queued behind the open block."""
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    for epoch in run.epochs(3):
        for _ in range(1000):
            run.log({"loss": float(epoch)})
    run_id = run.id
    run.finish()
    stored = Store(str(tmp_path)).run(run_id)
    assert stored.history("loss")[0].tolist() == list(range(3000))
    epochs = sorted((s for s in stored.spans() if s.kind == "epoch"), key=lambda span: span.start_time)
    assert [(s.attributes["runtel.step_start"], s.attributes["runtel.step_end"]) for s in epochs] == [
        (0, 999),
        (1000, 1999),
        (2000, 2999),
    ]


@pytest.mark.parametrize("layout", ["repeated", "mixed", "one series"])
def test_grouped_records_are_written_as_the_general_sort_would(layout: str) -> None:
    rng = np.random.default_rng(3)
    if layout == "repeated":
        index = np.tile(np.array([5, 1, 3], np.int32), 400)
    elif layout == "mixed":
        index = rng.integers(0, 6, size=1200).astype(np.int32)
    else:
        index = np.full(1200, 2, np.int32)
    n = index.size
    points = MetricPoints(
        names=tuple(f"s{i}" for i in range(6)),
        index=index,
        steps=np.arange(n, dtype=np.int64),
        times=rng.random(n),
        values=np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
        span_ids=np.arange(n, dtype=np.uint64),
    )
    general = _to_block(points)
    order = np.argsort(index, kind="stable")
    assert general is not None
    assert np.array_equal(general.records["step"], points.steps[order])
    starts = general.bounds[:-1]
    ids = index[order][starts]
    grouped = np.empty(n, SERIES_DTYPE)
    for field, column in (("step", "steps"), ("time", "times"), ("value", "values"), ("span_id", "span_ids")):
        grouped[field] = getattr(points, column)[order]
    if np.unique(np.bincount(index)[ids]).size == 1:  # as many points each: the C hot path's shape
        fast = _to_block(
            MetricPoints(**{**_columns(points), "grouped": (grouped, ids.astype(np.int32))})  # type: ignore[arg-type]
        )
        assert fast is not None
        assert fast.names == general.names
        assert np.array_equal(fast.bounds, general.bounds)
        assert fast.records.tobytes() == general.records.tobytes()
        assert np.array_equal(fast.mins, general.mins, equal_nan=True)
        assert np.array_equal(fast.maxs, general.maxs, equal_nan=True)


def _columns(points: MetricPoints) -> dict[str, object]:
    return {
        "names": points.names,
        "index": points.index,
        "steps": points.steps,
        "times": points.times,
        "values": points.values,
        "span_ids": points.span_ids,
    }


def test_values_are_stored_bit_for_bit(tmp_path: Path) -> None:
    odd = [math.nan, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 2.0**53, -(2**53)]
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    for value in odd:
        run.log({"v": value})
    run_id = run.id
    run.finish()
    _, _, values = Store(str(tmp_path)).run(run_id).history("v")
    assert np.array(odd, np.float64).tobytes() == np.ascontiguousarray(values).tobytes()


def test_logging_order_is_rebuilt_where_times_tie() -> None:
    """Calls closer than a timestamp's resolution: the k-th point of each series at one time is the
    k-th call's, and a series' own order (a step that went back) is kept."""
    from runtel._order import logging_order

    # series 0 and 1 logged together by 3 calls at one time, then series 0 alone twice at another
    times = np.array([5.0, 5.0, 5.0, 7.0, 7.0, 5.0, 5.0, 5.0])
    index = np.array([0, 0, 0, 0, 0, 1, 1, 1], np.int32)
    steps = np.array([2, 0, 1, 9, 3, 2, 0, 1])
    order = logging_order(times, index)
    assert list(zip(index[order].tolist(), steps[order].tolist(), strict=True)) == [
        (0, 2), (1, 2), (0, 0), (1, 0), (0, 1), (1, 1), (0, 9), (0, 3)
    ]  # fmt: skip
    # a series whose clock went back and then repeated a time keeps its own order
    order = logging_order(np.array([1.0, 1.0, 0.5, 1.0]), np.zeros(4, np.int32))
    assert order.tolist() == [2, 0, 1, 3]


def test_version_says_which_implementation_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from runtel.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    said = capsys.readouterr().out
    assert said.endswith("(C hot path)\n" if ACCELERATED else "(pure-Python hot path)\n"), said


@pytest.mark.parametrize("exporter", ["keeping every batch", "none"])
def test_buffers_are_reused_only_once_nobody_holds_their_points(tmp_path: Path, exporter: str) -> None:
    """Blocks' buffers are pooled and refilled once their batch is written and exported: a batch an
    exporter still holds keeps its values while dozens of later blocks are filled (none is reused),
    and without one (every buffer reused many times) the store has every point exactly."""
    keeping = CollectingExporter()
    exporters = [keeping] if exporter != "none" else []
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0, exporters=exporters)
    calls = 300_000  # 3,000,000 points: about 46 blocks of 65,536
    for s in range(calls):
        run.log({f"m{j}": float(s * 10 + j) for j in range(10)} if s % 1000 else {"m0": float(s * 10)})
    run_id = run.id
    run.finish()
    seen = 0
    for batch in (record for record in keeping.records if isinstance(record, MetricPoints)):
        names = np.array(batch.names)[batch.index]
        expected = batch.steps * 10 + np.char.lstrip(names.astype(str), "m").astype(np.int64)
        assert np.array_equal(batch.values, expected.astype(np.float64))
        seen += len(batch)
    stored = Store(str(tmp_path)).run(run_id)
    if exporters:
        assert seen == sum(stored.history(name)[0].size for name in stored.metrics())
    steps, _, values = stored.history("m3")
    assert steps.size == calls - calls // 1000
    assert np.array_equal(values, steps * 10.0 + 3)


def test_a_dict_changed_while_its_call_is_read_is_stored_as_one_of_its_states(tmp_path: Path) -> None:
    """A finalizer run by the garbage collector in the middle of the call (a new layout allocates)
    replaces a name: the points are the dict before or after, never old values under new names."""
    import gc

    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)
    d = {"a": 1.0, "b": 2.0}
    run.log({"b": 0.0, "c": 0.0}, step=0)
    run.log({"a": 0.0, "b": 0.0}, step=1)
    run.log({"x": 0.0}, step=2)

    class Mutator:
        def __del__(self) -> None:
            if "a" in d:
                del d["a"]
                d["c"] = 99.0

    gc.collect()
    gc.disable()
    cycle = Mutator()
    cycle.self = cycle  # type: ignore[attr-defined]
    del cycle
    keep = [(i, -i) for i in range(5000)]  # no free 2-tuples left: the next one allocates (and collects)
    gc.enable()
    gc.set_threshold(1)
    try:
        run.log(d, step=3)
    finally:
        gc.set_threshold(700)
    del keep
    run_id = run.id
    run.finish()
    stored = Store(str(tmp_path)).run(run_id)
    at_three = {}
    for name in ("a", "b", "c"):
        steps, _, values = stored.history(name)
        at_three.update((name, v) for s, v in zip(steps.tolist(), values.tolist(), strict=True) if s == 3)
    assert at_three in ({"a": 1.0, "b": 2.0}, {"b": 2.0, "c": 99.0})


def test_a_name_whose_eq_rebinds_the_layout_cache_does_not_crash(tmp_path: Path) -> None:
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0)

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            run._layouts = {}  # the dict being searched loses its only other reference
            return str.__eq__(self, other)

    run.log({Name("k"): 1.0})  # the general path caches the layout under this key
    run.log({"k": 2.0})  # the C path looks "k" up in that cache
    run_id = run.id
    run.finish()
    steps, _, values = Store(str(tmp_path)).run(run_id).history("k")
    assert steps.tolist() == [0, 1] and values.tolist() == [1.0, 2.0]


def test_calls_without_metrics_only_advance_the_step(tmp_path: Path) -> None:
    run = runtel.init(project="p", base_dir=str(tmp_path), system_interval=0, flush_interval=600)
    run._wake_at = 2**62  # the flush below takes everything at once
    run.log({})
    run.flush()
    seen: list[MetricPoints] = []
    real_submit = run._dispatcher.submit

    def spy(records, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(r for r in records if isinstance(r, MetricPoints))
        real_submit(records, **kwargs)

    run._dispatcher.submit = spy  # type: ignore[method-assign]
    for _ in range(10):
        run.log({"a": 1.0, "b": 2.0})
    run.log({})
    run.flush()
    run_id = run.id
    run.finish()
    assert [len(batch) for batch in seen] == [20]
    if ACCELERATED:  # the block of the ten calls is grouped by series for the store
        assert seen[0].grouped is not None and seen[0].grouped[1].tolist() == [0, 1]
    steps, _, _ = Store(str(tmp_path)).run(run_id).history("a")
    assert steps.tolist() == list(range(1, 11))
