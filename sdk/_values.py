"""Validation of what ``run.log`` accepts: names, steps and scalar values.

The common cases (a str name already seen, a Python float or int) are checked inline
in :meth:`runtel.Run.log`; the rarer ones land here. Values are stored as float64, so
an int beyond 2**53 is refused rather than rounded silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtel.errors import (
    InvalidMetricError,
    InvalidNameError,
    InvalidParamError,
    InvalidStepError,
    InvalidValueError,
)

#: Longest metric name accepted (characters). Backends with tighter limits get a reported adaptation.
MAX_NAME_LENGTH = 256
MAX_EXACT_INT = 2**53
#: Largest step (int64). The implicit step after it is refused at the call, never overflowed later.
MAX_STEP = 2**63 - 1


def encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: lone surrogates (``"\\udc80"``, from bytes decoded with
    ``surrogateescape``) cannot, and would make the store file holding them unwritable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_name(name: object, what: str = "metric") -> str:
    """``name`` if it is a usable name; raises InvalidNameError otherwise.

    Called once per distinct name (the run interns metric names), so it is off the hot path."""
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} names must be str, got {type(name).__name__} {name!r}")
    if not name or name.isspace():
        raise InvalidNameError(f"{what} name must not be empty or blank, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"{what} name {name[:40]!r}... is {len(name)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise InvalidNameError(f"{what} name {name!r} contains a control character")
    if not encodable(name):
        raise InvalidNameError(
            f"{what} name {name!r} contains a lone surrogate and cannot be stored as UTF-8; "
            "decode the bytes it came from with a real encoding (or errors='replace')"
        )
    return name


def check_span_text(name: object, kind: object, attributes: Mapping[str, Any]) -> None:
    """A span's name, kind and attributes end up in ``events.jsonl``: refuse what UTF-8 cannot hold."""
    for what, text in (("span name", name), ("span kind", kind)):
        if not isinstance(text, str):
            raise InvalidNameError(f"{what} must be a str, got {type(text).__name__} {text!r}")
        if not encodable(text):
            raise InvalidNameError(f"{what} {text!r} contains a lone surrogate and cannot be stored as UTF-8")
    try:
        json.dumps(attributes, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParamError(
            f"span {name!r}: an attribute contains a lone surrogate and cannot be stored as UTF-8"
        ) from None


def coerce_value(name: str, value: Any) -> float:
    """``value`` as a float64, exactly; raises for anything that is not a real scalar."""
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, int | np.integer):
        return exact_int(name, int(value))
    if isinstance(value, float | np.floating):
        return exact_float(name, value)
    if isinstance(value, np.ndarray):
        if value.size != 1 or value.dtype.kind not in "biuf":
            raise InvalidMetricError(
                f"metric {name!r}: expected a scalar, got a numpy array of shape {value.shape} "
                f"and dtype {value.dtype}"
            )
        return coerce_value(name, value.reshape(()).item())
    if _is_torch_tensor(value):
        if value.numel() != 1:
            raise InvalidMetricError(
                f"metric {name!r}: expected a 0-d or one-element tensor, got shape {tuple(value.shape)}; "
                "log a reduction such as .mean() instead"
            )
        if value.is_complex():
            raise InvalidMetricError(f"metric {name!r}: complex tensors are not real scalars")
        return coerce_value(name, value.item())
    raise InvalidMetricError(
        f"metric {name!r}: expected int, float, bool, a numpy scalar or a one-element tensor, "
        f"got {type(value).__name__} {_preview(value)}"
    )


def exact_int(name: str, value: int) -> float:
    if -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
        return float(value)
    raise InvalidValueError(
        f"metric {name!r}: {value} cannot be stored exactly as float64 (|value| > 2**53); "
        "log float(value) if rounding is acceptable"
    )


def exact_float(name: str, value: float | np.floating[Any]) -> float:
    """``value`` as a float64 if that is exact; a ``numpy.longdouble`` (``float128``) that float64 would
    round is refused, as an int beyond 2**53 is."""
    result = float(value)
    if not isinstance(value, np.longdouble) or result == value or math.isnan(result):
        return result  # float16/32/64 always convert exactly
    raise InvalidValueError(
        f"metric {name!r}: {np.dtype(type(value)).name} {value!r} cannot be stored exactly as float64; "
        "log float(value) if rounding is acceptable"
    )


def check_step(step: Any) -> int:
    """A validated explicit step: an integer from 0 to ``MAX_STEP``.

    Python and numpy integers and one-element integer tensors are accepted; ``bool`` and
    floats are refused, a whole-number float too (``step=3.0`` is most often a bug; pass
    ``int(step)``).
    """
    if _is_torch_tensor(step) and step.numel() == 1 and not step.is_floating_point():
        if str(step.dtype) == "torch.bool":
            raise InvalidStepError(f"step must be a non-negative int, got a bool tensor {step!r}")
        return check_step(int(step.item()))
    if isinstance(step, float | np.floating) and float(step).is_integer():
        raise InvalidStepError(
            f"step must be a non-negative int, got {type(step).__name__} {step!r}; "
            "pass int(step) if it is one"
        )
    if isinstance(step, bool | np.bool_) or not isinstance(step, int | np.integer):
        raise InvalidStepError(f"step must be a non-negative int, got {type(step).__name__} {step!r}")
    value = int(step)
    if value < 0:
        raise InvalidStepError(f"step must be >= 0, got {value}")
    if value > MAX_STEP:
        raise InvalidStepError(f"step {value} does not fit in int64 (the largest step is 2**63 - 1)")
    return value


def _is_torch_tensor(value: Any) -> bool:
    """Duck-typed check, so torch is never imported when the user does not use it."""
    module = type(value).__module__
    return module.startswith("torch") and hasattr(value, "numel") and hasattr(value, "item")


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
