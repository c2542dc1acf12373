"""The one place where records are rewritten to fit what a backend can hold, and reported.

Each exporter declares :class:`~runtel.exporters.base.Capabilities`; an :class:`Adapter` per
exporter rewrites that exporter's record stream to fit and counts every change by kind, with a
few examples. The report ends up in ``summary.json`` under ``adaptations`` (and in ``runtel
show``), and each kind is warned about once. Nothing reaches a backend changed without it, and
exporters never flatten, cut, stringify or move anything themselves.

Metric batches are adapted with numpy over whole columns; a batch that needs no change is
returned as the very same object.
Media records (images, tables, text, audio) are fitted by :mod:`runtel._adapt_media`.
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

from runtel._adapt_media import MediaFitter
from runtel._adapt_steps import StepFitter
from runtel.exporters.base import EPOCH_SERIES, EXPORTER_NAMESPACE, Capabilities
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MediaLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEdited,
    RunEnded,
    RunStarted,
    SpanEnded,
)

logger = logging.getLogger("runtel")
_MAX_EXAMPLES = 5
_KEY_CHAR = re.compile(r"[\w\-. /]")
#: Where a user metric inside the exporters' namespace is moved to.
_USER_PREFIX = "user/"

_Path = tuple[str, ...]
#: Report kinds for params and for a summary stored as fields: ``param_truncated``, ``summary_truncated``...
_PREFIX = {"parameter": "param", "summary": "summary"}


@dataclasses.dataclass
class _Kind:
    count: int = 0
    examples: list[Any] = dataclasses.field(default_factory=list)


class Report:
    """Changes counted by kind, a few examples each; each kind is warned about once."""

    def __init__(self, exporter_name: str) -> None:
        self._name = exporter_name
        self._kinds: dict[str, _Kind] = {}

    def note(self, kind: str, count: int, examples: Sequence[Any]) -> None:
        entry = self._kinds.get(kind)
        if entry is None:
            entry = self._kinds[kind] = _Kind()
            logger.warning(
                "runtel: adapting records for %s (%s), e.g. %s",
                self._name,
                kind,
                examples[0] if examples else "",
            )
        entry.count += count
        room = _MAX_EXAMPLES - len(entry.examples)
        if room > 0:
            entry.examples.extend(examples[:room])

    def as_dict(self) -> dict[str, Any]:
        return {kind: {"count": v.count, "examples": v.examples} for kind, v in self._kinds.items()}


class Adapter:
    """Fits one exporter's records to its capabilities; keeps state across batches of a run."""

    def __init__(self, exporter_name: str, capabilities: Capabilities, scratch_dir: Path) -> None:
        self._caps = capabilities
        self._scratch = scratch_dir
        self._report = Report(exporter_name)
        self._steps = StepFitter(capabilities, self._report)
        self._key_pattern = re.compile(capabilities.key_pattern) if capabilities.key_pattern else None
        media_pattern = capabilities.media_key_pattern or capabilities.key_pattern
        self._media_pattern = re.compile(media_pattern) if media_pattern else None
        pattern = capabilities.artifact_name_pattern
        self._artifact_pattern = re.compile(pattern) if pattern else None
        self._keys: dict[tuple[str, _Path], str] = {}
        self._taken: dict[tuple[str, str], _Path] = {}
        self._namespaces: set[tuple[str, str]] = set()
        self._sent_params: dict[str, Any] = {}
        self._last_time: dict[str, float] = {}
        self._media = MediaFitter(
            capabilities,
            self._report,
            self._steps,
            scratch_dir,
            key=lambda name: self._key("media", (name,), name),
            artifact=self._artifact,
        )

    def report(self) -> dict[str, Any]:
        return self._report.as_dict()

    def adapt(self, records: Sequence[Record]) -> list[Record]:
        out: list[Record] = []
        for record in records:
            if isinstance(record, MetricPoints):
                points = self._points(record)
                if len(points):
                    out.append(points)
            elif isinstance(record, ParamsLogged):
                params, extra = self._params(record.params, record.time, "parameter")
                out.extend(
                    [record if params is record.params else dataclasses.replace(record, params=params)]
                )
                out.extend(extra)
            elif isinstance(record, RunStarted):
                config, extra = self._params(record.config, record.start_time, "parameter")
                tags = self._tags(record.tags)
                if config is not record.config or tags is not record.tags:
                    record = dataclasses.replace(record, config=config, tags=tags)
                out.append(record)
                out.extend(extra)
            elif isinstance(record, RunEdited):
                added = self._tags(record.tags_added)
                if added is not record.tags_added:
                    record = dataclasses.replace(record, tags_added=added)
                out.append(record)
            elif isinstance(record, RunEnded):
                out.extend(self._ended(record))
            elif isinstance(record, HistogramLogged):
                if self._kept(record, self._caps.histograms, "histograms_left_out"):
                    out.append(self._histogram(self._restep(record, f"histograms/{record.name}")))
            elif isinstance(record, FigureLogged):
                if self._kept(record, self._caps.figures, "figures_left_out"):
                    out.append(self._restep(record, f"figures/{record.name}"))
            elif isinstance(record, MediaLogged):
                out.extend(self._media.fit(record))
            elif isinstance(record, ArtifactLogged):
                if self._kept(record, self._caps.artifacts, "artifacts_left_out"):
                    out.append(self._artifact(record))
            elif isinstance(record, SpanEnded) and record.kind == "epoch":
                out.append(self._restep_epoch(record))
            else:
                out.append(record)
        return out

    def _tags(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """``tags`` without those over ``max_tag_length`` (W&B refuses the whole update for one)."""
        limit = self._caps.max_tag_length
        if limit is None or all(len(tag) <= limit for tag in tags):
            return tags
        long = [tag for tag in tags if len(tag) > limit]
        reason = f"longer than the backend's {limit} characters"
        self._report.note("tags_left_out", len(long), [{"tag": tag, "reason": reason} for tag in long])
        return tuple(tag for tag in tags if len(tag) <= limit)

    def _kept(self, record: ArtifactLogged | FigureLogged | HistogramLogged, taken: bool, kind: str) -> bool:
        if not taken:
            self._report.note(kind, 1, [{"name": record.name, "reason": "the backend takes none"}])
        return taken

    # ------------------------------------------------------------------ metric points
    def _points(self, points: MetricPoints) -> MetricPoints:
        """Every column is rewritten only where something has to change; otherwise ``points`` itself."""
        caps = self._caps
        names = tuple(self._key("metric", (name,), name) for name in points.names)
        index, steps, times, values, spans = (
            points.index,
            points.steps,
            points.times,
            points.values,
            points.span_ids,
        )
        if caps.non_finite_values != "exact":
            values, keep = self._non_finite(points, names)
            if keep is not None:
                index, steps, times, values, spans = (
                    index[keep],
                    steps[keep],
                    times[keep],
                    values[keep],
                    spans[keep],
                )
        if caps.step_rule != "any" or caps.run_step_rule != "any":
            steps = self._steps.fit(names, index, steps)
        if caps.time_resolution is not None:
            times = self._round_times(names, index, steps, times, caps.time_resolution)
        if caps.time_rule != "any":
            times = self._fit_times(names, index, times)
        if caps.value_dtype == "float32":
            self._count_float32_rounding(values, names, index, steps)
        if (
            names == points.names
            and index is points.index
            and steps is points.steps
            and times is points.times
            and values is points.values
        ):
            return points
        return MetricPoints(names, index, steps, times, values, spans)

    def _non_finite(
        self, points: MetricPoints, names: tuple[str, ...]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_] | None]:
        values = points.values
        drop = self._caps.non_finite_values == "drop"
        bad = ~np.isfinite(values) if drop else np.isinf(values)
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
        if drop:
            self._report.note("non_finite_dropped", int(positions.size), examples)
            return values, ~bad
        self._report.note("infinity_clamped", int(positions.size), examples)
        return np.clip(values, -np.finfo(np.float64).max, np.finfo(np.float64).max), None

    def _round_times(
        self,
        names: tuple[str, ...],
        index: npt.NDArray[np.int32],
        steps: npt.NDArray[np.int64],
        times: npt.NDArray[np.float64],
        resolution: float,
    ) -> npt.NDArray[np.float64]:
        """Times in whole multiples of the backend's resolution, the changed ones reported."""
        per_second = round(1.0 / resolution)
        rounded = np.rint(times * per_second) / per_second
        positions = np.flatnonzero(rounded != times)
        if not positions.size:
            return times
        examples = [
            {
                "metric": names[int(index[p])],
                "step": int(steps[p]),
                "time": float(times[p]),
                "sent_as": float(rounded[p]),
            }
            for p in positions[:_MAX_EXAMPLES]
        ]
        self._report.note("time_rounded", int(positions.size), examples)
        return rounded

    def _fit_times(
        self, names: tuple[str, ...], index: npt.NDArray[np.int32], times: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Per series, a time below the series' previous one is raised to it (non-decreasing)."""
        if not times.size:
            return times
        order = np.argsort(index, kind="stable")
        grouped, starts, ends = _groups(index, order)
        sorted_times = times[order]
        heads = np.array([self._last_time.get(names[int(i)], -math.inf) for i in grouped])
        previous = np.empty_like(sorted_times)
        previous[1:] = sorted_times[:-1]
        previous[starts] = heads
        if not (sorted_times < previous).any():
            for i, end in zip(grouped.tolist(), ends.tolist(), strict=True):
                self._last_time[names[i]] = float(sorted_times[end - 1])
            return times
        raised = sorted_times.copy()
        for i, head, start, end in zip(grouped.tolist(), heads, starts.tolist(), ends.tolist(), strict=True):
            raised[start:end] = np.maximum(np.maximum.accumulate(sorted_times[start:end]), head)
            self._last_time[names[i]] = float(raised[end - 1])
        changed = np.flatnonzero(raised != sorted_times)
        examples = [
            {
                "metric": names[int(index[order[p]])],
                "time": float(sorted_times[p]),
                "sent_as": float(raised[p]),
            }
            for p in changed[:_MAX_EXAMPLES]
        ]
        self._report.note("time_raised", int(changed.size), examples)
        out = np.empty_like(times)
        out[order] = raised
        return out

    def _count_float32_rounding(
        self,
        values: npt.NDArray[np.float64],
        names: tuple[str, ...],
        index: npt.NDArray[np.int32],
        steps: npt.NDArray[np.int64],
    ) -> None:
        with np.errstate(over="ignore"):
            rounded = values.astype(np.float32).astype(np.float64)
        changed = rounded != values
        if not changed.any():
            return
        changed &= ~np.isnan(values)  # NaN != NaN, yet NaN is kept as NaN
        positions = np.flatnonzero(changed)
        if positions.size:
            examples = [
                {
                    "metric": names[int(index[p])],
                    "step": int(steps[p]),
                    "value": repr(float(values[p])),
                    "float32": repr(float(rounded[p])),
                }
                for p in positions[:_MAX_EXAMPLES]
            ]
            self._report.note("value_rounded_to_float32", int(positions.size), examples)

    # ------------------------------------------------------------------ epochs, figures, histograms
    def _restep(self, record: _Stepped, series: str) -> _Stepped:
        """A figure or histogram at its step as the backend's step rules allow (a series of its own)."""
        if record.step is None or not self._steps.active:
            return record
        step = self._steps.fit_one(series, record.step)
        return record if step == record.step else dataclasses.replace(record, step=step)

    def _restep_epoch(self, span: SpanEnded) -> SpanEnded:
        """An epoch reaches backends as an ``runtel/epoch`` point at the step it ended on."""
        original = span.attributes.get("runtel.step_end")
        if not isinstance(original, int) or not self._steps.active:
            return span
        step = self._steps.fit_one(EPOCH_SERIES, original)
        if step == original:
            return span
        return dataclasses.replace(span, attributes={**span.attributes, "runtel.step_end": step})

    # ------------------------------------------------------------------ parameters and summary
    def _params(
        self, params: dict[str, Any], when: float, what: str
    ) -> tuple[dict[str, Any], list[ArtifactLogged]]:
        """Params as the backend holds them: nested or flattened, keys checked at every level of a
        flattened key, leaves of the backend's types (else JSON text), within its length limit."""
        caps = self._caps
        nested = dict in caps.param_types
        extra: list[ArtifactLogged] = []
        out: dict[str, Any] = {}
        leaves = _leaves(params) if not nested else [((key,), value) for key, value in params.items()]
        if any(len(path) > 1 for path, _ in leaves):
            self._report.note(
                "params_flattened" if what == "parameter" else "summary_flattened",
                1,
                [{"kind": what, "keys": [caps.param_separator.join(p) for p, _ in leaves][:5]}],
            )
        changed = False
        for path, value in leaves:
            joined = caps.param_separator.join(path)
            key = self._key(what, path, joined)
            new = self._leaf(joined, value, what)
            text = _stored_text(new)
            if caps.max_param_length is not None and text is not None and len(text) > caps.max_param_length:
                artifact = self._full_value_artifact(joined, text, when)
                extra.append(artifact)
                new = text[: caps.max_param_length]
                self._report.note(
                    f"{_PREFIX[what]}_truncated",
                    1,
                    [
                        {
                            "kind": what,
                            "key": joined,
                            "length": len(text),
                            "limit": caps.max_param_length,
                            "full_value": artifact.name,
                        }
                    ],
                )
            if caps.params_immutable and what == "parameter":
                key = self._immutable_key(key, new)
            changed = changed or key != joined or new is not value or len(path) > 1
            out[key] = new
        return (out if changed or len(out) != len(params) else params), extra

    def _leaf(self, key: str, value: Any, what: str) -> Any:
        """One value as the backend can hold it; the original object when nothing changes."""
        caps = self._caps
        if isinstance(value, dict) and value and dict in caps.param_types:
            items = {k: self._leaf(f"{key}/{k}", v, what) for k, v in value.items()}
            return value if all(items[k] is value[k] for k in value) else items
        if not caps.non_finite_params and _has_non_finite(value):
            text = _json_text(value) if isinstance(value, list | dict) else repr(value)
            self._report.note(
                f"{_PREFIX[what]}_stringified",
                1,
                [{"kind": what, "key": key, "sent_as": text[:80], "reason": "NaN or infinity"}],
            )
            return text
        if not _holds(caps.param_types, value):
            text = _json_text(value)
            self._report.note(
                "param_stringified",
                1,
                [
                    {
                        "kind": what,
                        "key": key,
                        "sent_as": text[:80],
                        "reason": f"{type(value).__name__} as JSON",
                    }
                ],
            )
            return text
        if caps.params_as_text and not isinstance(value, str):
            return str(value)  # a backend whose params are strings: 4 as "4", True as "True", 0.1 as "0.1"
        return value

    def _immutable_key(self, key: str, value: Any) -> str:
        """A changed value of a write-once param goes under ``key.v2``, ``key.v3``... instead of failing."""
        candidate, version = key, 1
        while candidate in self._sent_params and self._sent_params[candidate] != value:
            version += 1
            suffix = f".v{version}"
            limit = self._caps.max_key_length
            candidate = (key if limit is None else key[: limit - len(suffix)]) + suffix
        if version > 1 and candidate not in self._sent_params:
            self._report.note("param_changed", 1, [{"key": key, "sent_as": candidate}])
        self._sent_params[candidate] = value
        return candidate

    def _ended(self, record: RunEnded) -> list[Record]:
        """A summary stored as fields follows the params' rules; one stored as a document is kept."""
        if not self._caps.summary_fields or not record.summary:
            return [record]
        summary, extra = self._params(record.summary, record.end_time, "summary")
        if summary is record.summary:
            return [record]
        return [*extra, dataclasses.replace(record, summary=summary)]

    def _full_value_artifact(self, key: str, value: str, when: float) -> ArtifactLogged:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:100] or "param"
        safe = f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
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

    # ------------------------------------------------------------------ histograms, artifacts, keys
    def _histogram(self, record: HistogramLogged) -> HistogramLogged:
        limit = self._caps.max_histogram_bins
        bins = record.counts.size
        if limit is None or bins <= limit:
            return record
        factor = -(-bins // limit)
        padded = np.concatenate([record.counts, np.zeros(-bins % factor, dtype=np.int64)])
        counts = padded.reshape(-1, factor).sum(axis=1)
        edges = np.append(record.bin_edges[:-1:factor], record.bin_edges[-1])
        self._report.note(
            "histogram_rebinned", 1, [{"name": record.name, "bins": bins, "sent_as": int(counts.size)}]
        )
        return dataclasses.replace(record, bin_edges=edges, counts=counts)

    def _artifact(self, record: ArtifactLogged) -> ArtifactLogged:
        pattern = self._artifact_pattern
        if pattern is None or pattern.fullmatch(record.name):
            return record
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", record.name).strip("-.")[:100] or "artifact"
        if not pattern.fullmatch(name):
            name = "artifact-" + hashlib.sha256(record.name.encode()).hexdigest()[:16]
        self._report.note("artifact_renamed", 1, [{"from": record.name, "to": name}])
        return dataclasses.replace(record, name=name)

    def _key(self, what: str, path: _Path, joined: str) -> str:
        """The backend's key for a metric, param or summary entry: allowed characters, within the
        length limit, outside the exporters' namespace (metrics), and never shared by two keys."""
        cached = self._keys.get((what, path))
        if cached is not None:
            return cached
        new, reason = joined, ""
        if what == "metric" and new.startswith(EXPORTER_NAMESPACE):
            new, reason = _USER_PREFIX + new, "the runtel/ namespace holds the names exporters add"
        pattern = self._media_pattern if what == "media" else self._key_pattern
        if pattern is not None and not pattern.fullmatch(new):
            new, reason = _sanitize_key(new, pattern), "characters the backend refuses"
        limit = self._caps.max_key_length
        if limit is not None and len(new) > limit:
            new, reason = _with_hash(new, path, limit), f"longer than the backend's {limit} characters"
        owner = self._taken.get((what, new))
        if owner is not None and owner != path:
            new, reason = _with_hash(new, path, limit), f"the same key as {'/'.join(owner)!r} once adapted"
        if self._caps.key_tree and self._tree_clash(what, new):
            reason = "a key cannot also be the namespace of another"
            new = new.replace("/", "_")
            if self._tree_clash(what, new) or (what, new) in self._taken:
                new = _with_hash(new, path, limit)
        if pattern is not None and not pattern.fullmatch(new):
            new = "k_" + _digest(path, 16)
        self._taken[what, new] = path
        if self._caps.key_tree:
            self._namespaces.update((what, prefix) for prefix in _prefixes(new))
        self._keys[what, path] = new
        if new != joined:
            self._report.note("key_renamed", 1, [{"kind": what, "from": joined, "to": new, "reason": reason}])
        return new

    def _tree_clash(self, what: str, key: str) -> bool:
        """``key`` is already a namespace, or one of its namespaces already holds a value."""
        if (what, key) in self._namespaces:
            return True
        return any((what, prefix) in self._taken for prefix in _prefixes(key))


_Stepped = TypeVar("_Stepped", FigureLogged, HistogramLogged)


def _groups(
    index: npt.NDArray[np.int32], order: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """For points sorted by series (``order``): each group's series index, start and end."""
    sorted_index = index[order]
    bounds = np.flatnonzero(sorted_index[1:] != sorted_index[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [sorted_index.size]))
    return sorted_index[starts], starts, ends


def _leaves(params: dict[str, Any], prefix: _Path = ()) -> list[tuple[_Path, Any]]:
    """Every leaf with the path of keys that leads to it (an empty dict is a leaf)."""
    out: list[tuple[_Path, Any]] = []
    for key, value in params.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            out.extend(_leaves(value, path))
        else:
            out.append((path, value))
    return out


def _holds(types: tuple[type, ...], value: Any) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, dict):
        return dict in types and all(_holds(types, v) for v in value.values())
    if isinstance(value, list):
        return list in types and all(_holds(types, v) for v in value)
    return isinstance(value, types)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def _json_text(value: Any) -> str:
    """The documented text form of a value a backend cannot hold: JSON, NaN and ±inf as JSON5 does."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False, default=repr)


def _stored_text(value: Any) -> str | None:
    """The value as a length-limited backend stores it (``None`` for nested values)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    if value is None or isinstance(value, list):
        return _json_text(value)
    return None


def _prefixes(key: str) -> list[str]:
    """``a/b/c`` -> ``a``, ``a/b``: the namespaces a key lives in."""
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _digest(path: _Path, size: int) -> str:
    return hashlib.sha256("\x1f".join(path).encode()).hexdigest()[:size]


def _with_hash(key: str, path: _Path, limit: int | None) -> str:
    suffix = "-" + _digest(path, 8)
    head = key if limit is None else key[: limit - len(suffix)]
    return head + suffix


def _sanitize_key(key: str, pattern: re.Pattern[str]) -> str:
    """A key the backend accepts: odd characters as ``_``, no empty, ``.`` or ``..`` path parts."""
    cleaned = "".join(char if _KEY_CHAR.fullmatch(char) else "_" for char in key)
    parts = [part.strip("-_ ") or "_" for part in cleaned.split("/") if part]
    parts = ["_" if part in (".", "..") else part for part in parts]
    candidate = "/".join(parts) or "_"
    if pattern.fullmatch(candidate):
        return candidate
    return "k_" + hashlib.sha256(key.encode()).hexdigest()[:16]
