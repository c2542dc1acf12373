"""Reading run-folder files as untrusted input: run folders are copied between machines and people.

Every reader goes through these helpers, so a wrong type, invalid JSON or a path leading out of the
folder is one :class:`~runtel.errors.StoreCorruptError` naming the file and the field, never a
``KeyError`` deep in a table or a file read from elsewhere on the disk.
"""

from __future__ import annotations

import json
import json.scanner
import math
import os
import stat
from pathlib import Path
from typing import Any

from runtel.errors import StoreCorruptError

#: What a field may hold, in words for the message and as a check.
Kind = tuple[str, tuple[type, ...]]
TEXT: Kind = ("a string", (str,))
NUMBER: Kind = ("a number", (int, float))
INTEGER: Kind = ("an integer", (int,))
BOOLEAN: Kind = ("true or false", (bool,))
#: A file named in an error: a ``Path``, or a plain string where a listing avoids building one.
Where = str | Path
OBJECT: Kind = ("a JSON object", (dict,))
ARRAY: Kind = ("a JSON array", (list,))


def load_json(path: Where, default: Any = None) -> Any:
    """The parsed document at ``path``; ``default`` when it does not exist; ``StoreCorruptError`` else."""
    try:
        with open(path, "rb", opener=_without_waiting) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise StoreCorruptError(path, None, "is not a plain file (a FIFO or a device)")
            raw = handle.read()
    except FileNotFoundError:
        return default
    except IsADirectoryError:
        raise StoreCorruptError(path, None, "is a folder, not a file") from None
    except OSError as exc:
        raise StoreCorruptError(path, None, f"cannot be read ({exc.strerror})") from exc
    return parse_json(raw, path)


def _without_waiting(path: str, flags: int) -> int:
    """``open()``'s opener: a FIFO put where a file should be is opened (and refused), never waited on."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


#: json's C scanner, called directly: ``json.loads`` adds two Python frames and two whitespace
#: matches to each document, a fifth of the cost of a small file (a listing reads two per run).
scan_document = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed types the (duck-typed) context as a scanner
)
#: The whitespace JSON allows around a document (``str.isspace`` would allow more).
_JSON_SPACE = " \t\n\r"


def parse_json(raw: bytes, path: Where) -> Any:
    """The document ``raw`` (the bytes of ``path``); ``StoreCorruptError`` naming the file if invalid."""
    try:
        text = raw.decode("utf-8")
        try:
            document, end = scan_document(text, 0)
        except (StopIteration, ValueError, RecursionError):
            pass  # json.loads names what is wrong, below
        else:
            if end == len(text) or not text[end:].strip(_JSON_SPACE):
                return document
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise StoreCorruptError(path, None, f"is not UTF-8 (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise StoreCorruptError(path, None, f"is not valid JSON (half-written or damaged, {where})") from exc
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits; nesting too deep
        raise StoreCorruptError(path, None, f"is not a JSON document runtel reads ({exc})") from exc


def load_object(path: Where) -> dict[str, Any]:
    """A JSON object document (``{}`` when the file does not exist yet)."""
    document = load_json(path, default={})
    if not isinstance(document, dict):
        raise StoreCorruptError(path, None, f"holds {kind_of(document)}, not a JSON object")
    return document


def is_kind(value: object, kind: Kind) -> bool:
    """``value`` is of ``kind``; ``True``/``False`` are never numbers here, only booleans."""
    if isinstance(value, bool):
        return kind is BOOLEAN
    return isinstance(value, kind[1])


def field(
    document: dict[str, Any],
    key: str,
    kind: Kind,
    path: Where,
    *,
    required: bool = False,
    label: str | None = None,
) -> Any:
    """``document[key]`` checked against ``kind``; None when absent (or ``null``) and not required.

    ``label`` is how the error names the field when ``key`` alone is not enough (``line 3: name``).
    """
    value = document.get(key)
    if value is None:
        if required:
            raise StoreCorruptError(path, label or key, "is missing")
        return None
    if not is_kind(value, kind):
        raise StoreCorruptError(path, label or key, f"is {kind_of(value)}, not {kind[0]}")
    return value


def check_fields(
    document: dict[str, Any],
    spec: dict[str, Kind],
    path: Where,
    *,
    required: tuple[str, ...] = (),
    prefix: str = "",
) -> None:
    """Every field of ``spec`` present in ``document`` has its kind, and every ``required`` one is there.

    Exact type checks first (JSON gives exact types, and ``type(True)`` is not ``int``), so listing
    thousands of runs costs little; a mismatch goes through :func:`field` for the message.
    """
    get = document.get
    for key, kind in spec.items():
        value = get(key)
        if value is None:
            if key in required:
                field(document, key, kind, path, required=True, label=f"{prefix}{key}")
        elif type(value) not in kind[1]:
            field(document, key, kind, path, label=f"{prefix}{key}")


def finite_number(value: object) -> float:
    """A number for sorting and durations: anything else (or NaN/inf) counts as 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def inside(root: Path, relative: object, path: Path, key: str) -> Path:
    """``root / relative`` with every symbolic link resolved, refused unless it stays inside ``root``."""
    if not isinstance(relative, str) or not relative:
        raise StoreCorruptError(path, key, f"is {kind_of(relative)}, not a relative path")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise StoreCorruptError(path, key, f"is the absolute path {relative!r}; it must stay inside {root}")
    base = root.resolve()
    resolved = (base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise StoreCorruptError(path, key, f"{relative!r} leads outside the run folder {root}")
    return resolved


def relocated(root: Path, stored: object, anchor: str, path: Path, key: str) -> Path:
    """A path an event recorded (absolute where it was written) as it lies in this copy of the folder.

    The part from an ``anchor`` component on (``plots``) is looked up under ``root``, first match that
    exists, so a folder moved or copied to another machine still finds its files, and nothing outside.
    """
    if not isinstance(stored, str) or not stored:
        raise StoreCorruptError(path, key, f"is {kind_of(stored)}, not a path")
    parts = Path(stored).parts
    tails = [Path(*parts[at:]).as_posix() for at, part in enumerate(parts) if part == anchor]
    if not tails:
        raise StoreCorruptError(path, key, f"{stored!r} is not under the run folder's {anchor}/")
    found = [inside(root, tail, path, key) for tail in tails]
    existing = next((candidate for candidate in found if candidate.exists()), None)
    if existing is None:
        raise StoreCorruptError(path, key, f"names {stored!r}, which is not in the run folder")
    return existing


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a JSON array",
        dict: "a JSON object",
    }.get(type(value), type(value).__name__)
