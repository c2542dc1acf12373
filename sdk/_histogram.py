"""Histograms of weights, gradients or activations: bin edges and counts plus exact moments."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from runtel.errors import InvalidMetricError
from runtel.records import HistogramLogged


def as_array(name: str, values: Any) -> np.ndarray:
    """numpy or torch values as a flat float64 array (torch moved to the CPU without importing torch)."""
    if type(values).__module__.startswith("torch") and hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidMetricError(
            f"histogram {name!r}: expected numbers (numpy array, tensor or list), got {type(values).__name__}"
        ) from None
    if array.size == 0:
        raise InvalidMetricError(f"histogram {name!r}: no values")
    return array


def make_histogram(name: str, values: Any, step: int, bins: int) -> HistogramLogged:
    """Bins span the finite values; NaN and ±inf are counted in ``count`` and the moments show them."""
    array = as_array(name, values)
    finite = array[np.isfinite(array)]
    counts, edges = np.histogram(finite if finite.size else np.zeros(1), bins=bins)
    if not finite.size:
        counts = np.zeros_like(counts)
    return HistogramLogged(
        name=name,
        step=step,
        time=time.time(),
        bin_edges=edges.astype(np.float64),
        counts=counts.astype(np.int64),
        min=float(array.min()),
        max=float(array.max()),
        mean=float(array.mean()),
        std=float(array.std()),
        count=int(array.size),
    )
