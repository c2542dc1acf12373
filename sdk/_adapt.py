"""The one place where records are rewritten to fit what a backend can hold, and reported.

Each exporter declares :class:`~runtel.exporters.base.Capabilities`; an :class:`Adapter` per
exporter rewrites that exporter's record stream to fit and counts every change by kind, with a
few examples. The report ends up in ``summary.json`` under ``adaptations`` (and in ``runtel
show``), and each kind is warned about once. Nothing reaches a backend changed without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from runtel.exporters.base import Capabilities, StepRule
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunStarted,
    SpanEnded,
    flatten_params,
)

logger = logging.getLogger("runtel")
_MAX_EXAMPLES = 5
_KEY_CHAR = re.compile(r"[\w\-. /]")


@dataclasses.dataclass
class _Kind:
    count: int = 0
    examples: list[Any] = dataclasses.field(default_factory=list)


class Adapter:
    """Fits one exporter's records to its capabilities; keeps state across batches of a run."""

    def __init__(self, exporter_name: str, capabilities: Capabilities, scratch_dir: Path) -> None:
        self._name = exporter_name
        self._caps = capabilities
        self._scratch = scratch_dir
        self._kinds: dict[str, _Kind] = {}
        self._key_pattern = re.compile(capabilities.key_pattern) if capabilities.key_pattern else None
        pattern = capabilities.artifact_name_pattern
        self._artifact_pattern = re.compile(pattern) if pattern else None
        self._keys: dict[str, str] = {}
        self._series_last: dict[str, int] = {}
        self._run_last: int | None = None
        self._offsets: dict[str, int] = {}  # key "" holds the run-wide offset
        self._last_time: dict[str, float] = {}
        self._sent_params: dict[str, Any] = {}

    def report(self) -> dict[str, Any]:
        return {kind: {"count": v.count, "examples": v.examples} for kind, v in self._kinds.items()}

    def adapt(self, records: Sequence[Record]) -> list[Record]:
        out: list[Record] = []
        for record in records:
            if isinstance(record, MetricPoints):
                points = self._points(record)
                if len(points):
                    out.append(points)
            elif isinstance(record, ParamsLogged):
                params, extra = self._params(record.params, record.time)
                out.extend([dataclasses.replace(record, params=params), *extra])
            elif isinstance(record, RunStarted):
                config, extra = self._params(record.config, record.start_time)
                out.extend([dataclasses.replace(record, config=config), *extra])
            elif isinstance(record, HistogramLogged):
                out.append(self._histogram(self._restep(record, f"histograms/{record.name}")))
            elif isinstance(record, FigureLogged):
                out.append(self._restep(record, f"figures/{record.name}"))
            elif isinstance(record, SpanEnded) and record.kind == "epoch":
                out.append(self._restep_epoch(record))
            elif isinstance(record, ArtifactLogged) and self._artifact_pattern is not None:
                out.append(self._artifact(record, self._artifact_pattern))
            else:
                out.append(record)
        return out

    # ------------------------------------------------------------------ metric points
    def _points(self, points: MetricPoints) -> MetricPoints:
        caps = self._caps
        names = tuple(self._key(name, "metric") for name in points.names)
        values, keep = self._non_finite(points, names)
        steps = points.steps
        if caps.step_rule != "any" or caps.run_step_rule != "any":
            steps = self._fit_steps(points, names)
        times = self._fit_times(points, names) if caps.time_rule != "any" else points.times
        if caps.value_dtype == "float32":
            self._count_float32_rounding(values, names, points.index)
        adapted = dataclasses.replace(points, names=names, steps=steps, times=times, values=values)
        if keep is None:
            return adapted
        return dataclasses.replace(
            adapted,
            index=adapted.index[keep],
            steps=adapted.steps[keep],
            times=adapted.times[keep],
            values=adapted.values[keep],
            span_ids=adapted.span_ids[keep],
        )

    def _non_finite(
        self, points: MetricPoints, names: tuple[str, ...]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_] | None]:
        mode = self._caps.non_finite_values
        values = points.values
        if mode == "exact":
            return values, None
        bad = ~np.isfinite(values) if mode == "drop" else np.isinf(values)
        if not bad.any():
            return values, None
        positions = np.flatnonzero(bad)
        examples = [
            {
                "metric": names[int(points.index[p])],
                "step": int(points.steps[p]),
                "value": repr(float(values[p])),
            }
            for p in positions[:_MAX_EXAMPLES]
        ]
        if mode == "drop":
            self._note("non_finite_dropped", int(positions.size), examples)
            return values, ~bad
        self._note("infinity_clamped", int(positions.size), examples)
        return np.clip(values, -np.finfo(np.float64).max, np.finfo(np.float64).max), None

    def _fit_steps(self, points: MetricPoints, names: tuple[str, ...]) -> npt.NDArray[np.int64]:
        steps = points.steps.copy()
        for position in range(steps.size):
            steps[position] = self._fit_step(names[int(points.index[position])], int(steps[position]))
        return steps

    def _fit_step(self, series: str, original: int) -> int:
        """Shift a segment that breaks the step rules forward (a resumed segment), never dropping it.

        The shift is an offset kept for the rest of the run (per series, or run-wide when the
        backend has one step counter), so later points keep their spacing. Epochs, figures and
        histograms at a step follow the same rules as series of their own (``epoch``,
        ``figures/<name>``, ``histograms/<name>``), so they stay aligned with the metrics.
        """
        caps = self._caps
        offset_key = "" if caps.run_step_rule != "any" else series
        series_gap, run_gap = _gap(caps.step_rule), _gap(caps.run_step_rule)
        step = original + self._offsets.get(offset_key, 0)
        required = -1
        if series_gap is not None and series in self._series_last:
            required = self._series_last[series] + series_gap
        if run_gap is not None and self._run_last is not None:
            required = max(required, self._run_last + run_gap)
        if step < required:
            self._offsets[offset_key] = required - original
            self._note(
                "step_shifted",
                1,
                {"metric": series, "step": original, "sent_as": required, "reason": "step went backwards"},
            )
            step = required
        elif self._offsets.get(offset_key):
            self._kinds["step_shifted"].count += 1
        self._series_last[series] = step
        self._run_last = step if self._run_last is None else max(self._run_last, step)
        return step

    def _restep(self, record: _Stepped, series: str) -> _Stepped:
        """A figure or histogram at its step as the backend's step rules allow."""
        if record.step is None or not self._has_step_rules():
            return record
        step = self._fit_step(series, record.step)
        return record if step == record.step else dataclasses.replace(record, step=step)

    def _restep_epoch(self, span: SpanEnded) -> SpanEnded:
        """An epoch reaches backends as an ``epoch`` point at the step it ended on."""
        original = span.attributes.get("runtel.step_end")
        if not isinstance(original, int) or not self._has_step_rules():
            return span
        step = self._fit_step("epoch", original)
        if step == original:
            return span
        return dataclasses.replace(span, attributes={**span.attributes, "runtel.step_end": step})

    def _has_step_rules(self) -> bool:
        return self._caps.step_rule != "any" or self._caps.run_step_rule != "any"

    def _fit_times(self, points: MetricPoints, names: tuple[str, ...]) -> npt.NDArray[np.float64]:
        times = points.times.copy()
        for position in range(times.size):
            name = names[int(points.index[position])]
            last = self._last_time.get(name)
            if last is not None and times[position] < last:
                self._note(
                    "time_raised", 1, {"metric": name, "time": float(times[position]), "sent_as": last}
                )
                times[position] = last
            self._last_time[name] = float(times[position])
        return times

    def _count_float32_rounding(
        self, values: npt.NDArray[np.float64], names: tuple[str, ...], index: npt.NDArray[np.int32]
    ) -> None:
        with np.errstate(over="ignore"):
            rounded = values.astype(np.float32).astype(np.float64)
        changed = np.flatnonzero((rounded != values) & ~np.isnan(values))
        if changed.size:
            examples = [
                {
                    "metric": names[int(index[p])],
                    "value": repr(float(values[p])),
                    "float32": repr(float(rounded[p])),
                }
                for p in changed[:_MAX_EXAMPLES]
            ]
            self._note("value_rounded_to_float32", int(changed.size), examples)

    # ------------------------------------------------------------------ parameters
    def _params(self, params: dict[str, Any], when: float) -> tuple[dict[str, Any], list[Record]]:
        caps = self._caps
        extra: list[Record] = []
        values = params if dict in caps.param_types else flatten_params(params)
        if dict not in caps.param_types and any(isinstance(v, dict) for v in params.values()):
            self._note("params_flattened", 1, {"keys": sorted(values)[:5]})
        out: dict[str, Any] = {}
        for key, value in values.items():
            new_key = self._key(key, "parameter")
            value = self._param_value(key, value)
            if caps.max_param_length is not None and len(str(value)) > caps.max_param_length:
                full = str(value)
                artifact = self._full_value_artifact(key, full, when)
                extra.append(artifact)
                value = full[: caps.max_param_length]
                self._note(
                    "param_truncated",
                    1,
                    {
                        "key": key,
                        "length": len(full),
                        "limit": caps.max_param_length,
                        "full_value": artifact.name,
                    },
                )
            if caps.params_immutable:
                new_key = self._immutable_key(new_key, value)
            out[new_key] = value
        return out, extra

    def _param_value(self, key: str, value: Any) -> Any:
        caps = self._caps
        if isinstance(value, dict) and dict in caps.param_types:
            return {k: self._param_value(f"{key}/{k}", v) for k, v in value.items()}
        if not caps.non_finite_params and isinstance(value, float) and not math.isfinite(value):
            self._note("param_stringified", 1, {"key": key, "value": repr(value), "reason": "non-finite"})
            return repr(value)
        if not isinstance(value, caps.param_types) or (
            isinstance(value, bool) and bool not in caps.param_types
        ):
            text = json.dumps(value, allow_nan=True)
            self._note("param_stringified", 1, {"key": key, "sent_as": text[:80]})
            return text
        return value

    def _immutable_key(self, key: str, value: Any) -> str:
        """A changed value of a write-once parameter goes under ``key@2``, ``key@3``... instead of failing."""
        candidate, version = key, 1
        while candidate in self._sent_params and self._sent_params[candidate] != value:
            version += 1
            candidate = f"{key}@{version}"
        if version > 1 and candidate not in self._sent_params:
            self._note("param_changed", 1, {"key": key, "sent_as": candidate})
        self._sent_params[candidate] = value
        return candidate

    def _full_value_artifact(self, key: str, value: str, when: float) -> ArtifactLogged:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:100] or "param"
        target = self._scratch / "params" / f"{safe}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        data = value.encode("utf-8")
        target.write_bytes(data)
        return ArtifactLogged(
            name=f"runtel-params/{safe}.txt",
            version=1,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            path=str(target),
            time=when,
            step=None,
            metadata={"parameter": key, "reason": "value longer than the backend's limit"},
        )

    # ------------------------------------------------------------------ histograms and keys
    def _histogram(self, record: HistogramLogged) -> HistogramLogged:
        limit = self._caps.max_histogram_bins
        bins = record.counts.size
        if limit is None or bins <= limit:
            return record
        factor = -(-bins // limit)
        padded = np.concatenate([record.counts, np.zeros(-bins % factor, dtype=np.int64)])
        counts = padded.reshape(-1, factor).sum(axis=1)
        edges = np.append(record.bin_edges[:-1:factor], record.bin_edges[-1])
        self._note("histogram_rebinned", 1, {"name": record.name, "bins": bins, "sent_as": int(counts.size)})
        return dataclasses.replace(record, bin_edges=edges, counts=counts)

    def _artifact(self, record: ArtifactLogged, pattern: re.Pattern[str]) -> ArtifactLogged:
        if pattern.fullmatch(record.name):
            return record
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", record.name).strip("-.")[:100] or "artifact"
        if not pattern.fullmatch(name):
            name = "artifact-" + hashlib.sha256(record.name.encode()).hexdigest()[:16]
        self._note("artifact_renamed", 1, {"from": record.name, "to": name})
        return dataclasses.replace(record, name=name)

    def _key(self, key: str, what: str) -> str:
        cached = self._keys.get(key)
        if cached is not None:
            return cached
        new = key
        if self._key_pattern is not None and not self._key_pattern.fullmatch(new):
            new = _sanitize_key(new, self._key_pattern)
        limit = self._caps.max_key_length
        if limit is not None and len(new) > limit:
            new = new[: limit - 9] + "-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        if new != key:
            self._note("key_renamed", 1, {"kind": what, "from": key, "to": new})
        self._keys[key] = new
        return new

    def _note(self, kind: str, count: int, example: Any) -> None:
        entry = self._kinds.get(kind)
        if entry is None:
            entry = self._kinds[kind] = _Kind()
            logger.warning("runtel: adapting records for %s (%s), e.g. %s", self._name, kind, example)
        entry.count += count
        for item in example if isinstance(example, list) else [example]:
            if len(entry.examples) < _MAX_EXAMPLES:
                entry.examples.append(item)


_Stepped = TypeVar("_Stepped", FigureLogged, HistogramLogged)


def _gap(rule: StepRule) -> int | None:
    return {"any": None, "non_decreasing": 0, "strictly_increasing": 1}[rule]


def _sanitize_key(key: str, pattern: re.Pattern[str]) -> str:
    """A key the backend accepts: odd characters as ``_``, no empty, ``.`` or ``..`` path parts."""
    cleaned = "".join(char if _KEY_CHAR.fullmatch(char) else "_" for char in key)
    parts = [part.strip("-_ ") or "_" for part in cleaned.split("/") if part]
    parts = ["_" if part in (".", "..") else part for part in parts]
    candidate = "/".join(parts) or "_"
    if pattern.fullmatch(candidate):
        return candidate
    return "k_" + hashlib.sha256(key.encode()).hexdigest()[:16]
