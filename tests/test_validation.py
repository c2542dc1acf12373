"""Bad input raises a named runtel error and records nothing of the failed call."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import runtel


def stored_points(run: runtel.Run) -> dict[str, list[tuple[int, float]]]:
    run.finish()
    stored = runtel.Store(run.dir.parent).run(run.id)
    return {
        name: list(zip(stored.history(name)[0].tolist(), stored.history(name)[2].tolist(), strict=True))
        for name in stored.metrics()
    }


BAD_VALUES: list[tuple[Any, type[Exception]]] = [
    ("0.5", runtel.InvalidMetricError),
    (None, runtel.InvalidMetricError),
    ([0.5], runtel.InvalidMetricError),
    (np.array([1.0, 2.0]), runtel.InvalidMetricError),
    (torch.tensor([1.0, 2.0]), runtel.InvalidMetricError),
    (1 + 2j, runtel.InvalidMetricError),
    (2**53 + 1, runtel.InvalidValueError),
]


@pytest.mark.parametrize(("value", "error"), BAD_VALUES, ids=lambda v: type(v).__name__)
def test_bad_value_raises_and_records_nothing_of_the_call(
    run: runtel.Run, value: Any, error: type[Exception]
) -> None:
    run.log({"loss": 1.0, "acc": 0.5})
    with pytest.raises(error, match="'bad'"):
        run.log({"loss": 2.0, "bad": value, "acc": 0.7})
    assert run.step == 0
    assert stored_points(run) == {"loss": [(0, 1.0)], "acc": [(0, 0.5)]}


def test_bad_value_errors_are_type_errors(run: runtel.Run) -> None:
    with pytest.raises(TypeError):
        run.log({"x": "string"})


BAD_NAMES: list[Any] = ["", "   ", "a" * 257, "tab\tname", "nul\x00", 3, ("a",)]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_name_raises_value_error_and_records_nothing(run: runtel.Run, name: Any) -> None:
    run.log({"loss": 1.0})
    with pytest.raises(runtel.InvalidNameError) as caught:
        run.log({"ok": 1.0, name: 2.0})
    assert isinstance(caught.value, ValueError)
    assert stored_points(run) == {"loss": [(0, 1.0)]}


@pytest.mark.parametrize("step", [-1, 1.5, "3", True, np.float64(2.0), 2**63], ids=repr)
def test_bad_step_raises_and_records_nothing(run: runtel.Run, step: Any) -> None:
    run.log({"loss": 1.0})
    with pytest.raises(runtel.InvalidStepError):
        run.log({"loss": 2.0}, step=step)
    assert stored_points(run) == {"loss": [(0, 1.0)]}


def test_negative_step_message_names_the_step(run: runtel.Run) -> None:
    with pytest.raises(ValueError, match="step must be >= 0, got -5"):
        run.log({"loss": 1.0}, step=-5)


def test_non_mapping_raises_type_error(run: runtel.Run) -> None:
    with pytest.raises(runtel.InvalidMetricError, match="mapping"):
        run.log([("loss", 1.0)])  # type: ignore[arg-type]


def test_numpy_integer_step_is_accepted(run: runtel.Run) -> None:
    run.log({"loss": 1.0}, step=np.int64(4))
    assert stored_points(run) == {"loss": [(4, 1.0)]}


def test_log_after_finish_raises(run: runtel.Run) -> None:
    run.finish()
    with pytest.raises(runtel.RunFinishedError):
        run.log({"loss": 1.0})


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"model": object()}, runtel.InvalidParamError),
        ({"": 1}, runtel.InvalidNameError),
        ({"nested": {"deep": {1: "x"}}}, runtel.InvalidNameError),
    ],
    ids=["object-value", "empty-key", "non-str-nested-key"],
)
def test_bad_params_raise_and_store_nothing(run: runtel.Run, params: dict[str, Any], error: type) -> None:
    run.log_params({"lr": 0.1})
    with pytest.raises(error):
        run.log_params(params)
    run.finish()
    assert runtel.Store(run.dir.parent).run(run.id).params() == {"lr": 0.1}


def test_params_keep_nesting_and_merge(run: runtel.Run) -> None:
    run.log_params({"model": {"depth": 4, "act": "relu"}, "lr": 1e-3, "tags": ["a", "b"], "none": None})
    run.log_params({"model": {"depth": 8}, "seed": np.int64(3)})
    run.finish()
    assert runtel.Store(run.dir.parent).run(run.id).params() == {
        "model": {"depth": 8, "act": "relu"},
        "lr": 1e-3,
        "tags": ["a", "b"],
        "none": None,
        "seed": 3,
    }
