"""Non-metric records as JSON lines (``events.jsonl``) and back, so a stored run replays exactly.

Reading validates every field (run folders are untrusted input): a record comes back with the types
its dataclass declares, or the reader raises :class:`~runtel.errors.StoreCorruptError`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from runtel.errors import StoreCorruptError
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MediaLogged,
    ParamsLogged,
    Record,
    RunEdited,
    RunEnded,
    RunStarted,
    SpanEnded,
)
from runtel.store._untrusted import ARRAY, BOOLEAN, INTEGER, NUMBER, OBJECT, TEXT, Kind, field, is_kind

_TYPES: dict[str, type] = {
    "run_started": RunStarted,
    "params": ParamsLogged,
    "span": SpanEnded,
    "artifact": ArtifactLogged,
    "figure": FigureLogged,
    "histogram": HistogramLogged,
    "media": MediaLogged,
    "run_ended": RunEnded,
    "run_edited": RunEdited,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}
_ARRAY_FIELDS = {"bin_edges": np.float64, "counts": np.int64}
#: A media file as ``events.jsonl`` names it: content-addressed, directly in the run's ``media/``.
MEDIA_PATH = re.compile(r"media/[0-9a-f]{64}\.[a-z]{2,5}(\.[a-z]{2,5})?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MEDIA_KINDS = ("image", "table", "text", "audio")
_TEXT_TUPLES = ("tags", "tags_added", "tags_removed")


def is_event(record: Record) -> bool:
    return type(record) in _NAMES


def to_line(record: Record) -> str:
    """One JSON line; NaN and ±inf are kept (JSON's ``NaN``/``Infinity`` extension)."""
    document: dict[str, Any] = {"type": _NAMES[type(record)]}
    for spec in dataclasses.fields(record):
        value = getattr(record, spec.name)
        document[spec.name] = value.tolist() if isinstance(value, np.ndarray) else value
    if isinstance(record, MediaLogged):  # stored relative, so the folder can be moved or copied
        document["path"] = f"media/{PurePath(record.path).name}"
        if record.preview is not None:
            document["preview"] = f"media/{PurePath(record.preview).name}"
    return json.dumps(document, ensure_ascii=False, allow_nan=True, default=str)


@dataclass(frozen=True, slots=True)
class EventLog:
    """The records of one ``events.jsonl``, and the torn last line skipped, if there was one."""

    records: list[Record]
    #: Why the last line was skipped (a crash mid-write leaves it without its newline), or None.
    torn: str | None = None


def read_events(path: Path) -> EventLog:
    """Every record of ``path`` in logging order (an empty log when the file does not exist).

    A last line without its newline was cut by a crash while being written: it is skipped and
    described in ``torn``, whatever bytes it holds (half a UTF-8 character included). Any other line
    that is not a valid record is a :class:`StoreCorruptError` naming the line and field.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return EventLog([])
    except OSError as exc:
        raise StoreCorruptError(path, None, f"cannot be read ({exc.strerror})") from exc
    lines = raw.split(b"\n")
    tail = lines.pop()
    torn = f"{path.name} ends in a torn line of {len(tail)} bytes (ignored)" if tail else None
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append(parse_line(line, path, number))
    return EventLog(records, torn)


def parse_line(line: bytes, path: Path, number: int) -> Record:
    where = f"line {number}"
    try:
        document = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StoreCorruptError(path, None, f"{where} is not UTF-8 (byte {exc.start})") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
        raise StoreCorruptError(path, None, f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise StoreCorruptError(path, None, f"{where} is not a JSON object")
    kind = document.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise StoreCorruptError(path, f"{where}: type", f"is {kind!r}, not one of {', '.join(_TYPES)}")
    values: dict[str, Any] = {}
    for name, (expected, need) in _FIELDS[cls].items():
        if name not in document and need == _OPTIONAL:
            continue
        key = f"{where}: {name}"
        value = field(document, name, expected, path, required=need == _REQUIRED, label=key)
        if value is None and need == _OPTIONAL:
            continue
        values[name] = _convert(name, value, path, key)
    if cls is SpanEnded and values["kind"] not in ("run", "epoch", "phase"):
        raise StoreCorruptError(path, f"{where}: kind", f"is {values['kind']!r}, not run, epoch or phase")
    if cls is MediaLogged:
        _check_media(values, path, where)
    record: Record = cls(**values)
    return record


def _check_media(values: dict[str, Any], path: Path, where: str) -> None:
    """A media line's kind, hash, file names and counters (the files themselves are checked on read)."""
    if values["kind"] not in _MEDIA_KINDS:
        raise StoreCorruptError(
            path, f"{where}: kind", f"is {values['kind']!r}, not one of {', '.join(_MEDIA_KINDS)}"
        )
    if not _SHA256.fullmatch(values["sha256"]):
        raise StoreCorruptError(
            path, f"{where}: sha256", f"is {values['sha256']!r}, not 64 lowercase hex digits"
        )
    for name in ("path", "preview"):
        value = values.get(name)
        if value is not None and not MEDIA_PATH.fullmatch(value):
            raise StoreCorruptError(
                path, f"{where}: {name}", f"is {value!r}, not a file media/<sha256>.<ext> of the run folder"
            )
    if not values["path"].startswith(f"media/{values['sha256']}."):
        raise StoreCorruptError(
            path, f"{where}: path", f"{values['path']!r} does not carry the record's sha256"
        )
    for name in ("step", "size"):
        if values[name] < 0:
            raise StoreCorruptError(path, f"{where}: {name}", f"is {values[name]}, below 0")
    index, count = values.get("index", 0), values.get("count", 1)
    if not 0 <= index < count:
        raise StoreCorruptError(path, f"{where}: index", f"is {index}, not from 0 to count - 1 ({count - 1})")


def _convert(name: str, value: Any, path: Path, key: str) -> Any:
    """Arrays and tuples back from JSON lists, each element checked."""
    if name in _TEXT_TUPLES:
        if not all(isinstance(tag, str) for tag in value):
            raise StoreCorruptError(path, key, "holds a value that is not a string")
        return tuple(value)
    if name in _ARRAY_FIELDS:
        kind = INTEGER if name == "counts" else NUMBER
        if not all(is_kind(item, kind) for item in value):
            raise StoreCorruptError(path, key, f"holds a value that is not {kind[0]}")
        return np.asarray(value, dtype=_ARRAY_FIELDS[name])
    return value


_REQUIRED, _NULLABLE, _OPTIONAL = "required", "nullable", "optional"
_FIELDS: dict[type, dict[str, tuple[Kind, str]]] = {
    RunStarted: {
        "run_id": (TEXT, _REQUIRED),
        "name": (TEXT, _REQUIRED),
        "project": (TEXT, _REQUIRED),
        "start_time": (NUMBER, _REQUIRED),
        "config": (OBJECT, _REQUIRED),
        "tags": (ARRAY, _OPTIONAL),
        "resource": (OBJECT, _OPTIONAL),
        "resumed": (BOOLEAN, _OPTIONAL),
    },
    ParamsLogged: {"params": (OBJECT, _REQUIRED), "time": (NUMBER, _REQUIRED)},
    SpanEnded: {
        "name": (TEXT, _REQUIRED),
        "kind": (TEXT, _REQUIRED),
        "trace_id": (TEXT, _REQUIRED),
        "span_id": (TEXT, _REQUIRED),
        "parent_span_id": (TEXT, _NULLABLE),
        "start_time": (NUMBER, _REQUIRED),
        "end_time": (NUMBER, _REQUIRED),
        "attributes": (OBJECT, _REQUIRED),
        "status": (TEXT, _OPTIONAL),
    },
    ArtifactLogged: {
        "name": (TEXT, _REQUIRED),
        "version": (INTEGER, _REQUIRED),
        "sha256": (TEXT, _REQUIRED),
        "size": (INTEGER, _REQUIRED),
        "path": (TEXT, _REQUIRED),
        "time": (NUMBER, _REQUIRED),
        "step": (INTEGER, _NULLABLE),
        "kind": (TEXT, _OPTIONAL),
        "metadata": (OBJECT, _OPTIONAL),
    },
    FigureLogged: {
        "name": (TEXT, _REQUIRED),
        "path": (TEXT, _REQUIRED),
        "step": (INTEGER, _NULLABLE),
        "time": (NUMBER, _REQUIRED),
    },
    HistogramLogged: {
        "name": (TEXT, _REQUIRED),
        "step": (INTEGER, _REQUIRED),
        "time": (NUMBER, _REQUIRED),
        "bin_edges": (ARRAY, _REQUIRED),
        "counts": (ARRAY, _REQUIRED),
        "min": (NUMBER, _REQUIRED),
        "max": (NUMBER, _REQUIRED),
        "mean": (NUMBER, _REQUIRED),
        "std": (NUMBER, _REQUIRED),
        "count": (INTEGER, _REQUIRED),
    },
    MediaLogged: {
        "name": (TEXT, _REQUIRED),
        "step": (INTEGER, _REQUIRED),
        "time": (NUMBER, _REQUIRED),
        "kind": (TEXT, _REQUIRED),
        "path": (TEXT, _REQUIRED),
        "sha256": (TEXT, _REQUIRED),
        "size": (INTEGER, _REQUIRED),
        "span_id": (TEXT, _NULLABLE),
        "caption": (TEXT, _NULLABLE),
        "index": (INTEGER, _OPTIONAL),
        "count": (INTEGER, _OPTIONAL),
        "preview": (TEXT, _NULLABLE),
        "meta": (OBJECT, _OPTIONAL),
    },
    RunEnded: {
        "status": (TEXT, _REQUIRED),
        "end_time": (NUMBER, _REQUIRED),
        "error": (TEXT, _NULLABLE),
        "summary": (OBJECT, _OPTIONAL),
    },
    RunEdited: {
        "time": (NUMBER, _REQUIRED),
        "tags_added": (ARRAY, _OPTIONAL),
        "tags_removed": (ARRAY, _OPTIONAL),
        "note": (TEXT, _NULLABLE),
        "name": (TEXT, _NULLABLE),
        "host": (TEXT, _OPTIONAL),
        "pid": (INTEGER, _OPTIONAL),
        "user": (TEXT, _NULLABLE),
    },
}
