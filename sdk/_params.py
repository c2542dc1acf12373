"""Validation of hyperparameters: JSON-representable, nested dicts kept nested.

Everything is checked before anything is recorded, so a refused call stores nothing. Values are
kept exactly: a ``numpy.longdouble`` that float64 would round, a string that cannot be written as
UTF-8, a container that contains itself or one nested deeper than :data:`MAX_PARAM_DEPTH` is refused
with an :class:`~runtel.errors.InvalidParamError` naming the key path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from runtel._values import check_name, encodable
from runtel.errors import InvalidParamError

_T = TypeVar("_T")

#: Deepest nesting of dicts and lists accepted (the top-level mapping is depth 1).
MAX_PARAM_DEPTH = 64


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, JSON-ready copy of ``params``; raises naming the first key that cannot be stored."""
    if not isinstance(params, Mapping):
        raise InvalidParamError(f"parameters must be a mapping, got {type(params).__name__}")
    return _Cleaner().mapping("", params, 1)


class _Cleaner:
    """One walk over a parameter tree; ``_open`` holds the containers on the current path (cycles)."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def mapping(self, path: str, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        with_prefix = f"{path}/" if path else ""
        return self._nested(
            path,
            value,
            depth,
            lambda: {
                check_name(key, "parameter"): self.value(f"{with_prefix}{key}", item, depth)
                for key, item in value.items()
            },
        )

    def value(self, path: str, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            if not encodable(value):
                raise InvalidParamError(
                    f"parameter {path!r}: the string {value!r} contains a lone surrogate and cannot be "
                    "stored as UTF-8; decode the bytes it came from with a real encoding"
                )
            return value
        if isinstance(value, np.generic):
            return self._numpy_scalar(path, value, depth)
        if isinstance(value, Mapping):
            return self.mapping(path, value, depth + 1)
        if isinstance(value, list | tuple | np.ndarray):
            return self._nested(
                path,
                value,
                depth + 1,
                lambda: [self.value(f"{path}[{index}]", item, depth + 1) for index, item in enumerate(value)],
            )
        if isinstance(value, os.PathLike):
            return self.value(path, os.fspath(value), depth)
        raise InvalidParamError(
            f"parameter {path!r}: {type(value).__name__} cannot be stored as JSON; "
            "pass str, int, float, bool, None, or lists and dicts of them"
        )

    def _numpy_scalar(self, path: str, value: np.generic, depth: int) -> Any:
        item = value.item()
        if isinstance(item, np.generic):  # longdouble, clongdouble: no exact Python equivalent
            if isinstance(value, np.floating) and (float(item) == value or math.isnan(float(item))):
                return float(item)
            raise InvalidParamError(
                f"parameter {path!r}: {value.dtype.name} {value!r} cannot be stored exactly as JSON; "
                "pass float(value) or str(value)"
            )
        return self.value(path, item, depth)

    def _nested(self, path: str, container: object, depth: int, build: Callable[[], _T]) -> _T:
        if depth > MAX_PARAM_DEPTH:
            raise InvalidParamError(
                f"parameter {path!r} is nested more than {MAX_PARAM_DEPTH} levels deep; "
                "flatten it or store it as an artifact"
            )
        key = id(container)
        if key in self._open:
            raise InvalidParamError(
                f"parameter {path!r} contains itself (a cycle); parameters must be a tree of values"
            )
        self._open.add(key)
        try:
            return build()
        finally:
            self._open.discard(key)
