"""Framework hyperparameters made storable: frameworks hand over objects runtel cannot store as JSON."""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

import numpy as np

_SCALARS = (str, bool, int, float, type(None))


def storable_params(params: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """A JSON-ready copy of ``params``: keys as strings, unknown values (dtypes, callables, enums) as ``str``.

    Training must not fail on a hyperparameter a framework added; the value is kept readable instead.
    """
    mapping = vars(params) if isinstance(params, Namespace) else params
    return {str(key): _storable(value) for key, value in mapping.items()}


def _storable(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Namespace | Mapping):
        return storable_params(value)
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
