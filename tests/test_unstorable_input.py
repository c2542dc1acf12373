"""Input the store cannot hold exactly is refused at the call, atomically, and the run goes on.

A lone surrogate (what ``surrogateescape`` makes of undecodable bytes) cannot be written as UTF-8;
one in a metric name used to leave the series index unwritten (every series unreadable) and make
``finish()`` hang. A cyclic or very deep parameter used to raise ``RecursionError``, and a
``numpy.longdouble`` was rounded to float64 without a word.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtel
from runtel._params import MAX_PARAM_DEPTH

BAD = "bad \udc80 byte"


def finish_and_read(run: runtel.Run) -> runtel.StoredRun:
    started = time.monotonic()
    run.finish()
    assert time.monotonic() - started < 5, "finish() stalled"
    stored = runtel.Store(run.dir.parent).run(run.id)
    assert stored.status == "completed"
    return stored


def assert_untouched(stored: runtel.StoredRun) -> None:
    """What the test logged around the refused call is all there, exactly."""
    assert stored.metrics() == ["loss"]
    steps, _, values = stored.history("loss")
    assert steps.tolist() == [0, 1]
    assert values.tolist() == [1.0, 2.0]
    assert stored.params() == {"lr": 0.1}


REFUSED_CALLS: dict[str, tuple[Callable[[runtel.Run, Path], Any], type[Exception]]] = {
    "metric name": (lambda run, _: run.log({"ok": 1.0, BAD: 2.0}), runtel.InvalidNameError),
    "param key": (lambda run, _: run.log_params({"fine": 1, BAD: 2}), runtel.InvalidNameError),
    "nested param key": (lambda run, _: run.log_params({"a": {"b": {BAD: 1}}}), runtel.InvalidNameError),
    "param value": (lambda run, _: run.log_params({"fine": 1, "note": BAD}), runtel.InvalidParamError),
    "nested param value": (lambda run, _: run.log_params({"a": [1, {"b": BAD}]}), runtel.InvalidParamError),
    "numpy str param": (lambda run, _: run.log_params({"a": np.str_(BAD)}), runtel.InvalidParamError),
    "artifact name": (lambda run, src: run.log_artifact(src, name=f"models/{BAD}"), runtel.ArtifactError),
    "artifact metadata": (
        lambda run, src: run.log_artifact(src, name="m.txt", metadata={"why": BAD}),
        runtel.ArtifactError,
    ),
    "model name": (lambda run, src: run.log_model(src, name=BAD), runtel.ArtifactError),
    "span name": (lambda run, _: run.start_span(BAD), runtel.InvalidNameError),
    "span attribute": (lambda run, _: run.start_span("eval", note=BAD), runtel.InvalidParamError),
    "histogram name": (lambda run, _: run.log_histogram(BAD, np.arange(4.0)), runtel.InvalidNameError),
}


@pytest.mark.parametrize("where", list(REFUSED_CALLS))
def test_lone_surrogate_is_refused_at_the_call_and_the_run_goes_on(
    run: runtel.Run, tmp_path: Path, where: str
) -> None:
    call, error = REFUSED_CALLS[where]
    source = tmp_path / "source.txt"
    source.write_text("weights")
    run.log_params({"lr": 0.1})
    run.log({"loss": 1.0})
    with pytest.raises(error, match="surrogate"):
        call(run, source)
    run.log({"loss": 2.0})
    stored = finish_and_read(run)
    assert_untouched(stored)
    assert list(stored.dir.joinpath("versions").iterdir()) == []
    assert stored.spans()[-1].name.startswith("run ")  # no span of the refused call was recorded


@pytest.mark.parametrize(
    "settings",
    [{"name": BAD}, {"project": BAD}, {"tags": ["ok", BAD]}],
    ids=["run name", "project", "tag"],
)
def test_lone_surrogate_in_run_identity_is_refused_before_a_folder_exists(
    base_dir: Path, settings: dict[str, Any]
) -> None:
    with pytest.raises(runtel.ConfigError, match="surrogate"):
        runtel.init(base_dir=str(base_dir), **settings)
    assert not base_dir.exists() or list(base_dir.iterdir()) == []


def test_lone_surrogate_from_the_environment_names_the_variable(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTEL_NAME", b"caf\xe9".decode("utf-8", "surrogateescape"))
    with pytest.raises(runtel.ConfigError, match="RUNTEL_NAME"):
        runtel.init(base_dir=str(base_dir))


def cyclic() -> dict[str, Any]:
    tree: dict[str, Any] = {"model": {"layers": []}}
    tree["model"]["layers"].append(tree["model"])
    return tree


def deep(levels: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        tree = {"n": tree}
    return tree


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (cyclic(), r"parameter 'model/layers\[0\]' contains itself"),
        (deep(5000), "nested more than 64 levels deep"),
    ],
    ids=["cycle", "5000 levels"],
)
def test_cyclic_or_too_deep_params_name_the_path_and_store_nothing(
    run: runtel.Run, params: dict[str, Any], match: str
) -> None:
    run.log_params({"lr": 0.1})
    run.log({"loss": 1.0})
    with pytest.raises(runtel.InvalidParamError, match=match):
        run.log_params(params)
    run.log({"loss": 2.0})
    assert_untouched(finish_and_read(run))


def test_params_at_the_depth_limit_are_stored_exactly(run: runtel.Run) -> None:
    params = deep(MAX_PARAM_DEPTH - 1)
    run.log_params(params)
    assert finish_and_read(run).params() == params


def test_a_shared_subtree_is_not_a_cycle(run: runtel.Run) -> None:
    shared = {"width": 64}
    run.log_params({"encoder": shared, "decoder": shared})
    assert finish_and_read(run).params() == {"encoder": {"width": 64}, "decoder": {"width": 64}}


ROUNDED = np.longdouble(1) / np.longdouble(3)


@pytest.mark.parametrize(
    "value",
    [ROUNDED, np.array(ROUNDED), np.array([ROUNDED])],
    ids=["longdouble", "0-d array", "1-element array"],
)
def test_longdouble_metric_that_float64_would_round_is_refused(run: runtel.Run, value: Any) -> None:
    run.log_params({"lr": 0.1})
    run.log({"loss": 1.0})
    with pytest.raises(runtel.InvalidValueError, match=r"float128|longdouble"):
        run.log({"loss": 9.0, "third": value})
    run.log({"loss": 2.0})
    assert_untouched(finish_and_read(run))


def test_longdouble_that_float64_holds_exactly_is_stored(run: runtel.Run) -> None:
    run.log({"x": np.longdouble(0.5), "nan": np.longdouble("nan"), "inf": np.longdouble("-inf")})
    stored = finish_and_read(run)
    assert stored.history("x")[2].tolist() == [0.5]
    assert np.isnan(stored.history("nan")[2][0])
    assert stored.history("inf")[2].tolist() == [-np.inf]


@pytest.mark.parametrize(
    "value",
    [ROUNDED, np.clongdouble(1 + 2j), np.complex128(1 + 2j), [np.float64(1), ROUNDED]],
    ids=["longdouble", "clongdouble", "complex128", "in a list"],
)
def test_params_that_json_cannot_hold_exactly_are_refused(run: runtel.Run, value: Any) -> None:
    run.log_params({"lr": 0.1})
    with pytest.raises(runtel.InvalidParamError, match="'x"):
        run.log_params({"x": value})
    assert finish_and_read(run).params() == {"lr": 0.1}


def test_exact_longdouble_param_is_stored_as_float(run: runtel.Run) -> None:
    run.log_params({"x": np.longdouble(0.25)})
    assert finish_and_read(run).params() == {"x": 0.25}


@pytest.mark.parametrize("where", [b"caf\xe9.txt", b"sub\xff/ok.txt"], ids=["file", "folder"])
def test_directory_artifact_with_an_undecodable_file_name_is_refused_before_copying(
    run: runtel.Run, tmp_path: Path, where: bytes
) -> None:
    source = tmp_path / "checkpoint"
    (source / "fine").mkdir(parents=True)
    (source / "fine" / "weights.bin").write_bytes(b"w")
    bad = os.path.join(os.fsencode(source), where)
    os.makedirs(os.path.dirname(bad), exist_ok=True)
    with open(bad, "wb") as handle:
        handle.write(b"x")
    run.log_params({"lr": 0.1})
    run.log({"loss": 1.0})
    with pytest.raises(runtel.ArtifactError, match="not valid UTF-8"):
        run.log_artifact(source)
    run.log({"loss": 2.0})
    stored = finish_and_read(run)
    assert_untouched(stored)
    assert list(stored.dir.joinpath("versions").iterdir()) == []


def test_base_dir_whose_path_is_not_utf8_is_refused_at_init(tmp_path: Path) -> None:
    base_dir = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"runs-caf\xe9"))
    with pytest.raises(runtel.ConfigError, match="not valid UTF-8"):
        runtel.init(base_dir=base_dir)
    assert not os.path.exists(base_dir)


def test_user_instrument_attributes_that_no_series_name_may_hold_are_adapted_and_kept(
    run: runtel.Run, caplog: pytest.LogCaptureFixture
) -> None:
    """OTel instruments are not runtel calls, so nothing can be refused there: the point is kept
    under a storable name (lone surrogates and control characters replaced, a hash of the original)."""
    counter = run.meter.create_counter("requests")
    counter.add(1, {"route": BAD})
    counter.add(2, {"route": "two\nlines"})
    counter.add(3, {"route": "ok"})
    run.log_params({"lr": 0.1})
    run.log({"loss": 1.0})
    run.log({"loss": 2.0})
    stored = finish_and_read(run)
    names = stored.metrics()
    assert "requests{route=ok}" in names
    adapted = sorted(name for name in names if name.startswith("requests{route=") and "~" in name)
    assert [name.split("~")[0] for name in adapted] == [
        "requests{route=bad \ufffd byte}",
        "requests{route=two\ufffdlines}",
    ]
    assert [stored.history(name)[2].tolist() for name in adapted] == [[1.0], [2.0]]
    assert stored.history("requests{route=ok}")[2].tolist() == [3.0]
    assert stored.history("loss")[2].tolist() == [1.0, 2.0]
    assert "not storable text" in caplog.text
