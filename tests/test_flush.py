"""The background flush: backlogs written as bounded blocks, records kept in order among points,
and the interpreter's switch interval lowered only while a run is open."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel import run as run_module
from runtel.records import MetricPoints, ParamsLogged


@pytest.fixture
def default_switch_interval() -> Iterator[None]:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(saved)


@pytest.mark.usefixtures("default_switch_interval")
def test_switch_interval_is_one_millisecond_while_runs_are_open_and_restored_after(base_dir: Path) -> None:
    first = runtel.init(project="tests", name="a", base_dir=str(base_dir), system_interval=0)
    second = runtel.init(project="tests", name="b", base_dir=str(base_dir), system_interval=0)
    assert sys.getswitchinterval() == pytest.approx(0.001)
    first.finish()
    assert sys.getswitchinterval() == pytest.approx(0.001)  # one run is still open
    second.finish()
    assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.usefixtures("default_switch_interval")
def test_a_smaller_switch_interval_of_the_user_is_left_alone(base_dir: Path) -> None:
    sys.setswitchinterval(0.0002)
    run = runtel.init(project="tests", name="a", base_dir=str(base_dir), system_interval=0)
    assert sys.getswitchinterval() == pytest.approx(0.0002)
    run.finish()
    assert sys.getswitchinterval() == pytest.approx(0.0002)


def test_a_backlog_becomes_blocks_of_bounded_size_with_every_point_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "_MAX_BATCH_CALLS", 16_384)  # the pure-Python twin's bound
    calls = [
        (s, 1.0 + s, 7, (0, 1) if s % 3 else (0,), (float(s), -float(s)) if s % 3 else (float(s),))
        for s in range(40_000)
    ]
    batch: list[object] = []
    run_module._add_points(batch, calls, ("a", "b"))  # type: ignore[arg-type]
    assert len(batch) == 3
    assert all(isinstance(b, MetricPoints) for b in batch)
    points = [p for p in batch if isinstance(p, MetricPoints)]
    assert max(len(np.unique(p.steps)) for p in points) <= run_module._MAX_BATCH_CALLS
    steps = np.concatenate([p.steps for p in points])
    values = np.concatenate([p.values for p in points])
    names = np.concatenate([p.index for p in points])
    expected = [(s, float(s), 0) for s in range(40_000)]
    expected += [(s, -float(s), 1) for s in range(40_000) if s % 3]
    assert sorted(zip(steps.tolist(), values.tolist(), names.tolist(), strict=True)) == sorted(expected)


def test_records_between_calls_keep_their_place_among_the_points(base_dir: Path) -> None:
    run = runtel.init(
        project="tests", name="order", base_dir=str(base_dir), system_interval=0, flush_interval=600
    )
    run._wake_at = run_module._NEVER  # no early wake: the flush below converts the whole backlog
    for s in range(30_000):
        run.log({"x": float(s)})
        if s in (10, 20_000):
            run.log_params({"at": s})
    batch: list[object] = []
    real_submit = run._dispatcher.submit

    def spy(records, **kwargs):  # type: ignore[no-untyped-def]
        batch.extend(records)
        real_submit(records, **kwargs)

    run._dispatcher.submit = spy  # type: ignore[method-assign]
    run.flush()
    kinds = [type(r).__name__ for r in batch]
    # The 19,990 calls between the two records may be one block or two (the C hot path's blocks
    # hold up to 65,536 calls, the Python twin's 16,384), never mixed with a record.
    assert [kind for i, kind in enumerate(kinds) if i == 0 or kind != kinds[i - 1]] == [
        "MetricPoints",
        "ParamsLogged",
        "MetricPoints",
        "ParamsLogged",
        "MetricPoints",
    ]
    blocks = [r for r in batch if isinstance(r, MetricPoints)]
    assert max(len(np.unique(p.steps)) for p in blocks) <= run_module._MAX_BATCH_CALLS
    params = [r for r in batch if isinstance(r, ParamsLogged)]
    assert [p.params for p in params] == [{"at": 10}, {"at": 20_000}]
    run.finish()
    steps, _, values = runtel.Store(run.dir.parent).run(run.id).history("x")
    assert steps.tolist() == list(range(30_000)) and values.tolist() == [float(s) for s in range(30_000)]
