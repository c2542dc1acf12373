"""Every logged point reads back bit-exact, in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtel

from .conftest import run_python


def expected_values(n: int, seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=n) * 1e3
    values[::997] = np.nan
    values[5] = np.inf
    values[6] = -np.inf
    values[7] = 5e-324  # smallest subnormal
    return values


def test_explicit_and_auto_steps_read_back_bit_exact_in_a_fresh_process(base_dir: Path) -> None:
    explicit = expected_values(100_000, seed=1)
    auto = {f"m{k}": expected_values(10_000, seed=10 + k) for k in range(10)}
    with runtel.init(project="exact", name="exact", base_dir=str(base_dir)) as run:
        for step, value in enumerate(explicit):
            run.log({"explicit/series": float(value)}, step=3 * step)
        for i in range(10_000):
            run.log({name: float(values[i]) for name, values in auto.items()})
    np.save(base_dir / "explicit.npy", explicit)
    np.save(base_dir / "auto.npy", np.stack([auto[f"m{k}"] for k in range(10)]))

    report = run_python(
        f"""
import json, numpy as np, runtel
store = runtel.Store({str(base_dir)!r})
run = store.run({run.id!r})
explicit = np.load({str(base_dir / "explicit.npy")!r})
auto = np.load({str(base_dir / "auto.npy")!r})
steps, times, values = run.history("explicit/series")
out = {{"explicit_steps": bool((steps == 3 * np.arange(100_000)).all()),
       "explicit_values": explicit.tobytes() == values.tobytes(),
       "times_sorted": bool((np.diff(times) >= 0).all())}}
for k in range(10):
    s, _, v = run.history(f"m{{k}}")
    out[f"m{{k}}"] = bool((s == np.arange(299_998, 309_998)).all()) and v.tobytes() == auto[k].tobytes()
print(json.dumps(out))
""",
        cwd=base_dir,
    )
    assert json.loads(report) == {
        "explicit_steps": True,
        "explicit_values": True,
        "times_sorted": True,
        **{f"m{k}": True for k in range(10)},
    }


def test_auto_step_follows_the_previous_step(run: runtel.Run) -> None:
    run.log({"a": 1.0})
    run.log({"a": 2.0})
    run.log({"a": 3.0}, step=10)
    run.log({"a": 4.0})
    assert run.step == 11
    run.finish()
    steps, _, values = runtel.Store(run.dir.parent).run(run.id).history("a")
    assert steps.tolist() == [0, 1, 10, 11]
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_steps_going_backwards_are_kept_in_logging_order(run: runtel.Run) -> None:
    for step in [5, 6, 7, 2, 3, 8]:
        run.log({"loss": float(step)}, step=step)
    run.finish()
    steps, _, _ = runtel.Store(run.dir.parent).run(run.id).history("loss")
    assert steps.tolist() == [5, 6, 7, 2, 3, 8]


def test_accepted_value_types_are_stored_exactly(run: runtel.Run) -> None:
    import torch

    run.log(
        {
            "py_int": 7,
            "py_bool": True,
            "np_float32": np.float32(0.1),
            "np_int64": np.int64(2**53),
            "np_bool": np.bool_(False),
            "zero_d_array": np.array(2.5),
            "tensor_0d": torch.tensor(1.25, dtype=torch.float64),
            "tensor_1_elem": torch.tensor([3.0]),
            "nan": float("nan"),
            "neg_inf": float("-inf"),
        }
    )
    run.finish()
    stored = runtel.Store(run.dir.parent).run(run.id)
    got = {name: stored.history(name)[2][0] for name in stored.metrics()}
    assert got["py_int"] == 7.0
    assert got["py_bool"] == 1.0
    assert got["np_float32"] == float(np.float32(0.1))
    assert got["np_int64"] == float(2**53)
    assert got["np_bool"] == 0.0
    assert got["zero_d_array"] == 2.5
    assert got["tensor_0d"] == 1.25
    assert got["tensor_1_elem"] == 3.0
    assert np.isnan(got["nan"])
    assert got["neg_inf"] == -np.inf


def test_odd_metric_names_round_trip(run: runtel.Run) -> None:
    names = [
        "train/loss",
        "with space",
        "Ünïcødé/λ",
        "Loss",
        "loss",
        "a" * 256,
        "../../etc/passwd",
        "x\\y:z*?",
    ]
    for i, name in enumerate(names):
        run.log({name: float(i)}, step=i)
    run.finish()
    stored = runtel.Store(run.dir.parent).run(run.id)
    assert stored.metrics() == names
    for i, name in enumerate(names):
        assert stored.history(name)[2].tolist() == [float(i)]
    assert {p.name for p in (run.dir / "metrics").iterdir()} == {"index.json", "points.bin", "points.idx"}


def test_user_instruments_from_run_meter_become_series(run: runtel.Run) -> None:
    tokens = run.meter.create_counter("tokens")
    latency = run.meter.create_histogram("latency_ms")
    tokens.add(100)
    tokens.add(20)
    latency.record(5.0)
    latency.record(7.0)
    run.log({"loss": 1.0}, step=3)
    run.finish()
    stored = runtel.Store(run.dir.parent).run(run.id)
    steps, _, values = stored.history("tokens")
    assert values.tolist() == [120.0]
    assert steps.tolist() == [3]
    assert stored.history("latency_ms/count")[2].tolist() == [2.0]
    assert stored.history("latency_ms/sum")[2].tolist() == [12.0]
    assert stored.history("latency_ms/max")[2].tolist() == [7.0]


def test_user_instrument_points_with_long_attributes_are_kept_under_a_short_name(
    run: runtel.Run, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = "p" * 400  # an attribute value far beyond the 256-character series name limit
    requests = run.meter.create_counter("requests")
    latency = run.meter.create_histogram("latency_ms")
    requests.add(2, {"prompt": prompt})
    latency.record(4.0, {"prompt": prompt})
    run.finish()
    stored = runtel.Store(run.dir.parent).run(run.id)
    names = {name.split("{")[0]: name for name in stored.metrics() if len(name) > 200}
    assert len(names["requests"]) <= 256 and stored.history(names["requests"])[2].tolist() == [2.0]
    count = next(
        name for name in stored.metrics() if name.startswith("latency_ms") and name.endswith("/count")
    )
    assert len(count) <= 256 and stored.history(count)[2].tolist() == [1.0]
    assert "too long" in caplog.text


def test_live_run_is_readable_while_logging(run: runtel.Run) -> None:
    import time

    for i in range(1000):
        run.log({"live": float(i)})
    deadline = time.time() + 5
    stored = runtel.Store(run.dir.parent).run(run.id)
    while time.time() < deadline:
        if "live" in stored.metrics() and len(stored.history("live")[0]) == 1000:
            break
        time.sleep(0.1)
    assert stored.status == "running"
    assert stored.history("live")[2].tolist() == [float(i) for i in range(1000)]


def test_flush_makes_every_point_readable_at_once(base_dir: Path) -> None:
    with runtel.init(project="p", base_dir=str(base_dir), flush_interval=3600) as run:
        for i in range(5000):
            run.log({"x": float(i)})
        assert run.flush(timeout=30)
        assert runtel.Store(base_dir).run(run.id).history("x")[0].size == 5000
