"""Validation of hyperparameters: JSON-representable, nested dicts kept nested."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtel._values import check_name
from runtel.errors import InvalidParamError


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, JSON-ready copy of ``params``; raises naming the first key that cannot be stored."""
    if not isinstance(params, Mapping):
        raise InvalidParamError(f"parameters must be a mapping, got {type(params).__name__}")
    return {check_name(key, "parameter"): _clean(str(key), value) for key, value in params.items()}


def _clean(path: str, value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {check_name(key, "parameter"): _clean(f"{path}/{key}", item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_clean(f"{path}[{index}]", item) for index, item in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise InvalidParamError(
        f"parameter {path!r}: {type(value).__name__} cannot be stored as JSON; "
        "pass str, int, float, bool, None, or lists and dicts of them"
    )
