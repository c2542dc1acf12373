"""Property: every input is stored and read back exactly in a fresh process, or refused at the call.

Hypothesis generates whole runs (metric names and values, steps, params, artifact names) and a model
of what each accepted call should have stored. Each run is then read by one separate interpreter
with ``runtel.Store``, so nothing is judged from the writer's memory. A refused call must raise a
runtel error, leave the artifact folders as they were and change nothing else: the model only
counts accepted calls, so a half-written call shows up as a mismatch. Inputs that are plainly fine
(short ASCII names, finite floats) must never be refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtel
from runtel.errors import RuntelError

#: Examples of the quick test (CI's default run) and of its slow-marked variant; each example is 4-8 runs.
QUICK_EXAMPLES = 8
SLOW_EXAMPLES = 150

# Every character, lone surrogates included (Hypothesis leaves them out of text() by default).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
PLAIN_NAMES = st.sampled_from(["loss", "acc", "val/loss", "lr", "grad/norm", "Loss", "loss ", "ü/ß"])
NAMES = st.one_of(PLAIN_NAMES, st.text(ANY_CHAR, max_size=12), st.text(ANY_CHAR, min_size=250, max_size=260))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
VALUES = st.one_of(
    FLOATS,
    st.sampled_from([0.0, -0.0, 5e-324, -1.7976931348623157e308, math.inf, -math.inf]),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(np.float32),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(np.int64),
)
STEPS = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=2**20),
    st.sampled_from([0, 2**53 + 1, 2**62, -(2**63), 1.0, True, "2"]),
)
PARAM_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    FLOATS,
    st.text(ANY_CHAR, max_size=8),
)
PARAM_KEYS = st.one_of(st.sampled_from(["lr", "model", "depth", "a/b"]), st.text(ANY_CHAR, max_size=6))
PARAMS = st.dictionaries(
    PARAM_KEYS,
    st.recursive(
        PARAM_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(PARAM_KEYS, inner, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
ARTIFACT_NAMES = st.one_of(
    st.text(st.sampled_from("ab.-_/ é:E\u0301CON*"), min_size=1, max_size=10),
    st.text(ANY_CHAR, max_size=8),
    st.sampled_from(["model.pt", "models/best.pt", "é" * 110, "ok/" + "x" * 199, "nul.txt", ".blobs"]),
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("log"), st.dictionaries(NAMES, VALUES, min_size=1, max_size=4), STEPS),
        st.tuples(st.just("params"), PARAMS),
        st.tuples(st.just("artifact"), ARTIFACT_NAMES, st.binary(max_size=64)),
    ),
    min_size=20,
    max_size=60,
)

READER = """
import hashlib, json, sys
import runtel
from runtel.store.artifacts import ArtifactStore

def read(run_id):
    stored = runtel.Store(sys.argv[1]).run(run_id)
    artifacts = ArtifactStore(stored.dir)
    out = {
        "status": stored.status,
        "metrics": {},
        "params": json.dumps(stored.params(), sort_keys=True, allow_nan=True),
        "artifacts": {
            name: [
                hashlib.sha256(open(artifacts.get(name, v.version).path, "rb").read()).hexdigest()
                for v in artifacts.versions(name)
            ]
            for name in artifacts.names()
        },
    }
    for name in stored.metrics():
        steps, _, values = stored.history(name)
        out["metrics"][name] = [[int(s), float(v).hex()] for s, v in zip(steps.tolist(), values.tolist())]
    return out

print(json.dumps({run_id: read(run_id) for run_id in sys.argv[2:]}, ensure_ascii=True))
"""


@dataclass
class Model:
    """What the accepted calls should have stored."""

    metrics: dict[str, list[list[Any]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)


def deep_merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = value


def plainly_fine_metric(name: object, value: object) -> bool:
    return (
        isinstance(name, str)
        and name.isascii()
        and name.isprintable()
        and name.strip() != ""
        and len(name) <= 256
        and type(value) is float
        and math.isfinite(value)
    )


def artifact_tree(run_dir: Path) -> list[str]:
    return sorted(
        str(path.relative_to(run_dir))
        for folder in ("versions", "artifacts", "artifacts.json")
        for path in [run_dir / folder, *(run_dir / folder).rglob("*")]
        if path.exists()
    )


def apply(run: runtel.Run, model: Model, operation: tuple[Any, ...], source: Path) -> None:
    kind = operation[0]
    if kind == "log":
        _, metrics, step = operation
        at = run._last_step + 1  # the implicit step this call would get
        try:
            run.log(metrics, step=step)
        except RuntelError:
            assert not all(plainly_fine_metric(n, v) for n, v in metrics.items()) or step is not None
            assert run._last_step + 1 == at, "a refused log() moved the implicit step"
            return
        stamp = at if step is None else int(step)
        for name, value in metrics.items():
            exact = float(value)
            assert exact == value or math.isnan(exact)
            model.metrics.setdefault(name, []).append([stamp, exact.hex()])
    elif kind == "params":
        try:
            run.log_params(operation[1])
        except RuntelError:
            return
        deep_merge(model.params, json.loads(json.dumps(operation[1])))
    else:
        _, name, content = operation
        source.write_bytes(content)
        before = artifact_tree(run.dir)
        try:
            run.log_artifact(source, name=name)
        except RuntelError:
            assert artifact_tree(run.dir) == before, f"refused artifact {name!r} left files behind"
            return
        model.artifacts.setdefault(name, []).append(hashlib.sha256(content).hexdigest())


def read_in_fresh_process(base_dir: Path, run_ids: list[str]) -> dict[str, Any]:
    """Every run in one interpreter: a fresh process per run would spend the budget starting Python."""
    result = subprocess.run(
        [sys.executable, "-c", READER, str(base_dir), *run_ids],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


#: Several generated runs per example, all read back by one fresh process.
RUNS = st.lists(OPERATIONS, min_size=4, max_size=8)


def check_runs(runs: list[list[tuple[Any, ...]]]) -> None:
    with tempfile.TemporaryDirectory(prefix="runtel-property-") as scratch:
        base_dir = Path(scratch) / "runs"
        source = Path(scratch) / "payload.bin"
        models: dict[str, Model] = {}
        for number, operations in enumerate(runs):
            model = Model()
            run = runtel.init(
                project="property", name=f"generated-{number}", base_dir=str(base_dir), system_interval=0
            )
            for operation in operations:
                apply(run, model, operation, source)
            run.finish()
            models[run.id] = model
        stored = read_in_fresh_process(base_dir, list(models))
    for run_id, model in models.items():
        assert stored[run_id]["status"] == "completed"
        assert stored[run_id]["metrics"] == model.metrics
        assert stored[run_id]["params"] == json.dumps(model.params, sort_keys=True, allow_nan=True)
        assert stored[run_id]["artifacts"] == model.artifacts


def _property(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@_property(examples=QUICK_EXAMPLES)
@given(runs=RUNS)
def test_every_input_is_stored_exactly_or_refused(runs: list[list[tuple[Any, ...]]]) -> None:
    check_runs(runs)


@pytest.mark.slow
@_property(examples=SLOW_EXAMPLES)
@given(runs=RUNS)
def test_many_more_inputs_are_stored_exactly_or_refused(runs: list[list[tuple[Any, ...]]]) -> None:
    check_runs(runs)
