"""Non-metric records as JSON lines (``events.jsonl``) and back, so a stored run replays exactly."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    ParamsLogged,
    Record,
    RunEnded,
    RunStarted,
    SpanEnded,
)

_TYPES: dict[str, type] = {
    "run_started": RunStarted,
    "params": ParamsLogged,
    "span": SpanEnded,
    "artifact": ArtifactLogged,
    "figure": FigureLogged,
    "histogram": HistogramLogged,
    "run_ended": RunEnded,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_ARRAY_FIELDS = {"bin_edges": np.float64, "counts": np.int64}


def is_event(record: Record) -> bool:
    return type(record) in _NAMES


def to_line(record: Record) -> str:
    """One JSON line; NaN and ±inf are kept (JSON's ``NaN``/``Infinity`` extension)."""
    document: dict[str, Any] = {"type": _NAMES[type(record)]}
    for spec in dataclasses.fields(record):
        value = getattr(record, spec.name)
        document[spec.name] = value.tolist() if isinstance(value, np.ndarray) else value
    return json.dumps(document, ensure_ascii=False, allow_nan=True, default=str)


def from_line(line: str) -> Record | None:
    """The record of a line, or None for a torn (half-written) or unknown line."""
    try:
        document = json.loads(line)
        cls = _TYPES[document.pop("type")]
    except (ValueError, KeyError, TypeError):
        return None
    for name, dtype in _ARRAY_FIELDS.items():
        if name in document:
            document[name] = np.asarray(document[name], dtype=dtype)
    if "tags" in document:
        document["tags"] = tuple(document["tags"])
    record: Record = cls(**document)
    return record
