"""Logged tables for the UI's grid: read once per stored file, sorted and cut into pages on the server,
so a table of 100,000 rows sends 20 to the browser. Image cells become thumbnails served by the media
route, which accepts a cell's file only for the table that holds it (:func:`cell_file`)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from runtel.errors import MissingExtraError
from runtel.store import _layout
from runtel.store._untrusted import inside
from runtel.store.media import MediaItem, checked_by_name
from runtel.store.query import StoredRun
from runtel.ui.media_data import Item, media_url, run_media

#: Rows of a table per page.
PAGE_SIZE = 20
#: Tables kept read (each is one stored file; the same file is the same table).
_KEPT = 8


@dataclass(frozen=True, slots=True)
class LoadedTable:
    frame: Any
    #: Positions of the columns logged as images.
    image_columns: frozenset[int]
    #: The run-folder-relative files (and previews) of the table's image cells: what the media route
    #: may send for it.
    cells: frozenset[str]


_loaded: OrderedDict[tuple[str, str, str], LoadedTable] = OrderedDict()
_lock = threading.Lock()


def load(run: StoredRun, item: Item) -> LoadedTable:
    """The table ``item`` names as a DataFrame (its hash checked once, on first read), kept for the
    next page; :class:`~runtel.errors.StoreCorruptError` if the file is damaged,
    :class:`~runtel.errors.MissingExtraError` without pandas."""
    key = (str(run.dir), item.file, item.sha256 or "")
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    path = inside(run.dir, item.file, run.dir / _layout.EVENTS, "path")
    stored = MediaItem(item.name, item.step, "table", path, item.sha256 or "", item.size or 0, meta=item.meta)
    try:
        frame = stored.to_pandas()
    except ModuleNotFoundError as exc:
        if exc.name != "pandas":
            raise
        raise MissingExtraError("showing a logged table needs pandas: pip install pandas") from None
    root = run.dir.resolve()
    images = frozenset(
        position
        for position, column in enumerate(frame.columns)
        if any(isinstance(cell, MediaItem) for cell in frame[column])
    )
    cells = frozenset(
        _relative(path, root)
        for position in images
        for cell in frame.iloc[:, position]
        if isinstance(cell, MediaItem)
        for path in (cell.path, cell.preview)
        if path is not None and path.is_relative_to(root)
    )
    loaded = LoadedTable(frame, images, cells)
    with _lock:
        _loaded[key] = loaded
        while len(_loaded) > _KEPT:
            _loaded.popitem(last=False)
    return loaded


def cell_file(run: StoredRun, table: str, relative: str) -> Path | None:
    """The image cell file ``relative`` of the logged table stored at ``table`` (both from a browser),
    if a table record of the run names ``table`` and that table holds the cell; else None."""
    tables = (
        item
        for track in run_media(run).tracks.values()
        if track.kind == "table"
        for items in track.items.values()
        for item in items
    )
    found = next((item for item in tables if item.file == table), None)
    if found is None or relative not in load(run, found).cells:
        return None
    path = inside(run.dir, relative, run.dir / _layout.EVENTS, "path")
    if not path.is_file():
        return None
    checked_by_name(path, "path")  # a cell's file changed on disk is not served
    return path


def page(
    run: StoredRun, item: Item, number: Any, sort_by: Any, size: int = PAGE_SIZE
) -> tuple[list[dict[str, Any]], int]:
    """Rows of page ``number`` (from 0) of the table sorted by ``sort_by`` (the grid's own format:
    ``[{"column_id": "c2", "direction": "desc"}]``), and the number of pages."""
    loaded = load(run, item)
    frame = loaded.frame
    order = np.arange(len(frame))
    column, ascending = _sort_column(sort_by, len(frame.columns))
    if column is not None:
        order = _sorted(frame.iloc[:, column].reset_index(drop=True), ascending)
    pages = max(1, math.ceil(len(frame) / size))
    current = min(number, pages - 1) if isinstance(number, int) and number >= 0 else 0
    picked = frame.iloc[order[current * size : (current + 1) * size]]
    rows = []
    for row in picked.itertuples(index=False, name=None):
        cells = {}
        for position, value in enumerate(row):
            image = position in loaded.image_columns
            cells[f"c{position}"] = _image(run, item, value) if image else cell_value(value)
        rows.append(cells)
    return rows, pages


def columns(run: StoredRun, item: Item) -> list[dict[str, Any]]:
    """The grid's columns: ids ``c0``, ``c1``... (names may be anything), image columns as markdown."""
    loaded = load(run, item)
    return [
        {"name": str(name), "id": f"c{position}"}
        | ({"presentation": "markdown"} if position in loaded.image_columns else {})
        for position, name in enumerate(loaded.frame.columns)
    ]


def cell_value(value: Any) -> Any:
    """A cell as JSON carries it to the grid: NaN and infinities as words (never a blank), others as text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # pandas' own missing values read <NA> and NaT, as pandas prints them


def _image(run: StoredRun, table: Item, cell: Any) -> str:
    if not isinstance(cell, MediaItem):
        return ""
    relative = _relative(cell.preview or cell.path, run.dir.resolve())  # an exact .npy by its PNG
    return f"![image]({media_url(run.id, relative)}?table={quote(table.file, safe='/')})"


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _sorted(values: Any, ascending: bool) -> Any:
    """Row positions in the order of ``values``, missing last; a column of mixed types by its text."""
    try:
        return values.sort_values(ascending=ascending, kind="stable", na_position="last").index.to_numpy()
    except TypeError:
        keys = [str(value) for value in values]
        return np.asarray(sorted(range(len(keys)), key=keys.__getitem__, reverse=not ascending))


def _sort_column(sort_by: Any, count: int) -> tuple[int | None, bool]:
    if not isinstance(sort_by, list) or not sort_by or not isinstance(sort_by[0], dict):
        return None, True
    column_id, direction = sort_by[0].get("column_id"), sort_by[0].get("direction")
    if not isinstance(column_id, str) or not column_id.startswith("c") or not column_id[1:].isdigit():
        return None, True
    column = int(column_id[1:])
    return (column, direction != "desc") if column < count else (None, True)
