"""Reading a media record's stored file for a client library: text, a table's rows, an image cell.

The files are the run folder's ``media/<sha256>.<ext>`` (see ``runtel.records.MediaLogged``),
already fitted to the backend by the adaptation step. A table is a JSON Table Schema document
(``{"schema": {"fields": [...]}, "data": [{column: cell}, ...]}``, NaN and ±inf as JSON's ``NaN``
and ``Infinity``); an Image cell is ``{"image": <path in the run folder>, "caption": ...}``.
Everything read is checked, and a cell's path must stay inside the run folder.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtel.errors import RuntelError
from runtel.records import MediaLogged


@dataclass(frozen=True, slots=True)
class ImageCell:
    """An Image cell of a table: the PNG to send (an exact array's preview) and its caption."""

    path: str
    caption: str | None


@dataclass(frozen=True, slots=True)
class TableRows:
    """A table as columns and rows of Python cells; Image cells as :class:`ImageCell`."""

    columns: list[str]
    rows: list[list[Any]]


def read_text(record: MediaLogged) -> str:
    return Path(record.path).read_text(encoding="utf-8")


def read_document(path: str | Path) -> dict[str, Any]:
    """A table file's JSON document, its shape checked."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntelError(f"table file {path} cannot be read as JSON: {exc}") from exc
    fields = document.get("schema", {}).get("fields") if isinstance(document, dict) else None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(fields, list) or not isinstance(data, list):
        raise RuntelError(f"table file {path} is not a JSON Table Schema document (schema.fields, data)")
    if not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields):
        raise RuntelError(f"table file {path}: every schema field needs a name")
    if not all(isinstance(row, dict) for row in data):
        raise RuntelError(f"table file {path}: every row of data must be an object")
    checked: dict[str, Any] = document
    return checked


def read_table(record: MediaLogged) -> TableRows:
    """The table's columns (schema order) and rows."""
    document = read_document(record.path)
    image_columns = {
        c["name"] for c in record.meta.get("columns", []) if isinstance(c, dict) and c.get("dtype") == "image"
    }
    columns = [f["name"] for f in document["schema"]["fields"]]
    run_dir = Path(record.path).resolve().parent.parent  # the record is <run>/media/<file>
    rows = [
        [_image_cell(row.get(name), run_dir) if name in image_columns else row.get(name) for name in columns]
        for row in document["data"]
    ]
    return TableRows(columns, rows)


def _image_cell(cell: Any, run_dir: Path) -> ImageCell | None:
    if cell is None:
        return None
    path = cell.get("preview") or cell.get("image") if isinstance(cell, dict) else None
    if not isinstance(path, str):
        raise RuntelError(f"an Image cell must name its file ({{'image': path}}), got {cell!r}")
    resolved = (run_dir / path).resolve()
    if not resolved.is_relative_to(run_dir):
        raise RuntelError(f"an Image cell's file {path!r} is outside the run folder {run_dir}")
    caption = cell.get("caption")
    return ImageCell(str(resolved), caption if isinstance(caption, str) else None)


def cell_text(cell: Any) -> str:
    """A cell as a person reads it in a text-only table (an image as its file name)."""
    if isinstance(cell, ImageCell):
        return f"[image {Path(cell.path).name}]" + (f" {cell.caption}" if cell.caption else "")
    return "" if cell is None else str(cell)


def image_cell_text(cell: Any) -> str | None:
    """A stored Image cell as text: its file's path in the run folder (None stays None)."""
    if cell is None:
        return None
    path = cell.get("image") if isinstance(cell, dict) else None
    return path if isinstance(path, str) else json.dumps(cell, allow_nan=True)


def image_cell_label(cell: Any) -> str | None:
    """A stored Image cell as a person reads it in a text-only table: its file name and caption."""
    if cell is None:
        return None
    caption = cell.get("caption") if isinstance(cell, dict) else None
    label = f"[image {Path(str(image_cell_text(cell))).name}]"
    return label + (f" {caption}" if isinstance(caption, str) and caption else "")


def markdown_table(table: TableRows) -> str:
    """The table as Markdown (TensorBoard's text plugin renders it as a table)."""

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines = [row(table.columns), "|" + "---|" * len(table.columns)]
    lines.extend(row([cell_text(cell) for cell in cells]) for cells in table.rows)
    return "\n".join(lines)


def html_table(table: TableRows) -> str:
    """The table as a standalone HTML page, every cell escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell_text(cell))}</td>" for cell in cells) + "</tr>"
        for cells in table.rows
    )
    return (
        f'<!DOCTYPE html><html><meta charset="utf-8"><table border="1"><tr>{head}</tr>{body}</table></html>'
    )
