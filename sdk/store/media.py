"""Reading a run's media back: ``StoredRun.media(name)``, ``.table(name)`` and ``.media_names()``.

``events.jsonl``'s ``media`` lines are the index (one JSON object per item: name, step, kind, file,
sha256, caption, shape/dtype or columns). Every file is resolved inside the run folder (a symbolic
link leading out is refused) and its SHA-256 checked against the record before its bytes are used;
a mismatch is a :class:`~runtel.errors.StoreCorruptError` naming the file and field.
"""

from __future__ import annotations

import hashlib
import io
import json
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from runtel.errors import StoreCorruptError
from runtel.records import MediaKind, MediaLogged
from runtel.store import _layout
from runtel.store._events import MEDIA_PATH
from runtel.store._untrusted import inside

if TYPE_CHECKING:
    import pandas as pd

    from runtel.store.query import StoredRun


#: numpy dtypes of WAV samples by width in bytes (8-bit WAV is unsigned, wider is signed).
_WAV_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One stored image, table, text or audio clip; its bytes are read (and hashed) only when asked."""

    name: str
    step: int
    kind: MediaKind
    #: The stored file, inside the run folder (a PNG, ``.npy``, ``.txt``, WAV or ``.table.json``).
    path: Path
    sha256: str
    size: int
    caption: str | None = None
    index: int = 0
    count: int = 1
    #: The 8-bit PNG (image) or 16-bit WAV (audio) beside an exact ``.npy``, else None.
    preview: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0

    def read_bytes(self) -> bytes:
        """The file's bytes, checked against the SHA-256 recorded when it was logged."""
        return checked_bytes(self.path, self.sha256)

    def to_numpy(self) -> npt.NDArray[Any]:
        """An image's exact pixels (HW or HWC, the logged dtype) or an audio clip's exact waveform."""
        if self.kind not in ("image", "audio"):
            raise TypeError(f"{self.kind} {self.name!r} has no array; use .text or .to_pandas()")
        data = self.read_bytes()
        if self.meta.get("format") == "npy":
            return _npy(data, self.path)
        if self.kind == "audio":
            return _wav_samples(data, self.path, self.meta)
        from runtel.media import pillow

        with pillow().open(io.BytesIO(data)) as picture:
            pixels = np.array(picture)
        return _as_logged_shape(pixels, self.meta, self.path)

    @property
    def text(self) -> str:
        """A text item's content."""
        if self.kind != "text":
            raise TypeError(f"{self.kind} {self.name!r} is not text")
        try:
            return self.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreCorruptError(self.path, None, f"is not UTF-8 (byte {exc.start})") from exc

    @property
    def sample_rate(self) -> int:
        """An audio clip's sample rate (Hz)."""
        rate = self.meta.get("sample_rate")
        if self.kind != "audio" or not isinstance(rate, int):
            raise TypeError(f"{self.kind} {self.name!r} has no sample rate")
        return rate

    def to_pandas(self) -> pd.DataFrame:
        """A table as a DataFrame with the logged column dtypes; Image cells as :class:`MediaItem`.

        Read with Python's exact JSON parser (``pd.read_json(path, orient="table", precise_float=True)``
        reads the file too, but refuses subnormal floats)."""
        if self.kind != "table":
            raise TypeError(f"{self.kind} {self.name!r} is not a table")
        import pandas as pd

        data = self.read_bytes()
        try:
            rows = json.loads(data)["data"]
            cells = {column: [row.get(column) for row in rows] for column in self._column_names()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorruptError(self.path, None, f"is not a readable table ({exc})") from exc
        run_dir = self.path.parent.parent
        series = {}
        for name, dtype, column in self._column_dtypes():
            values = cells.get(name, [])
            if dtype == "image":
                values = [_image_cell(run_dir, cell, self, name) for cell in values]
            try:
                if dtype == "category" and "categories" in column:
                    series[name] = pd.Series(_categorical(values, column, self.path, name))
                elif dtype.startswith("datetime64"):
                    aware = ", " in dtype  # each cell holds its offset, which DST may vary: via UTC
                    read = pd.to_datetime(values, format="ISO8601", utc=aware)
                    series[name] = pd.Series(read).astype(dtype)
                else:
                    series[name] = pd.Series(values, dtype=object if dtype in ("object", "image") else dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                raise StoreCorruptError(self.path, name, f"cannot be read as {dtype} ({exc})") from exc
        return pd.DataFrame(series, columns=list(series))

    def _column_dtypes(self) -> list[tuple[str, str, dict[str, Any]]]:
        columns = self.meta.get("columns")
        found = []
        for column in columns if isinstance(columns, list) else []:
            name = column.get("name") if isinstance(column, dict) else None
            dtype = column.get("dtype") if isinstance(column, dict) else None
            if not isinstance(name, str) or not isinstance(dtype, str):
                raise StoreCorruptError(self.path, "columns", f"holds {column!r}, not a name and a dtype")
            found.append((name, dtype, column))
        return found

    def _column_names(self) -> list[str]:
        return [name for name, _, _ in self._column_dtypes()]


def media_records(run: StoredRun) -> list[MediaLogged]:
    """Every media record of the run (rank 0), in logging order."""
    return [record for record in run.events() if isinstance(record, MediaLogged)]


def media_of(run: StoredRun, name: str) -> list[tuple[int, MediaItem]]:
    """``[(step, item)]`` of media key ``name``, in logging order (a gallery: one entry per image)."""
    items = [(record.step, item_of(run.dir, record)) for record in media_records(run) if record.name == name]
    if not items:
        from runtel.errors import MetricNotFoundError

        known = ", ".join(sorted(media_names(run))) or "none"
        raise MetricNotFoundError(f"run {run.name} has no media {name!r}; it has: {known}")
    return items


def media_names(run: StoredRun) -> dict[str, int]:
    """Each media key with how many items were logged under it, in the order they first appeared."""
    return dict(Counter(record.name for record in media_records(run)))


def table_of(run: StoredRun, name: str, step: int | None = None) -> pd.DataFrame:
    """The latest table logged under ``name`` (or the one at ``step``) as a DataFrame."""
    tables = [(at, item) for at, item in media_of(run, name) if item.kind == "table"]
    if step is not None:
        tables = [(at, item) for at, item in tables if at == step]
    if not tables:
        where = f" at step {step}" if step is not None else ""
        raise KeyError(f"run {run.name} has no table {name!r}{where}")
    return tables[-1][1].to_pandas()


def item_of(run_dir: Path, record: MediaLogged) -> MediaItem:
    """``record`` as a :class:`MediaItem` whose paths are resolved inside ``run_dir``."""
    events = run_dir / _layout.EVENTS
    path = inside(run_dir, record.path, events, "path")
    preview = None if record.preview is None else inside(run_dir, record.preview, events, "preview")
    return MediaItem(
        name=record.name,
        step=record.step,
        kind=record.kind,
        path=path,
        sha256=record.sha256,
        size=record.size,
        caption=record.caption,
        index=record.index,
        count=record.count,
        preview=preview,
        meta=record.meta,
        time=record.time,
    )


def verify_media(run_dir: Path, records: list[MediaLogged]) -> list[str]:
    """A line per media file that is missing, leads outside the folder or fails its SHA-256."""
    problems = []
    for record in records:
        try:
            item_of(run_dir, record).read_bytes()
        except StoreCorruptError as exc:
            problems.append(f"{record.kind} {record.name!r} step {record.step}: {exc}")
    return problems


def verify_item(item: MediaItem) -> None:
    """Every file ``item`` uses, checked before it is sent or served: its own against the record's
    SHA-256, its preview against the hash its content-addressed name holds, and for a table each Image
    cell's file against the cell's ``sha256`` (and its preview by name). A mismatch is a
    :class:`StoreCorruptError` naming the file and the field."""
    item.read_bytes()
    if item.preview is not None:
        checked_by_name(item.preview, "preview")
    if item.kind == "table":
        for cell in table_cells(item):
            cell.read_bytes()
            if cell.preview is not None:
                checked_by_name(cell.preview, f"{cell.name}: preview")


def table_cells(item: MediaItem) -> list[MediaItem]:
    """The Image cells of a table (read without pandas), each with its path resolved in the run folder."""
    columns = [name for name, dtype, _ in item._column_dtypes() if dtype == "image"]
    if not columns:
        return []
    try:
        rows = json.loads(item.read_bytes())["data"]
        cells = [(column, row.get(column)) for row in rows for column in columns]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreCorruptError(item.path, None, f"is not a readable table ({exc})") from exc
    run_dir = item.path.parent.parent
    found = [_image_cell(run_dir, cell, item, column) for column, cell in cells]
    return [cell for cell in found if cell is not None]


def checked_by_name(path: Path, field: str | None = None) -> bytes:
    """A content-addressed media file (``media/<sha256>.<ext>``) checked against its name's hash."""
    return checked_bytes(path, path.name.split(".", 1)[0], field)


def checked_bytes(path: Path, sha256: str, field: str | None = None) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreCorruptError(path, None, "is missing (a media record names it)") from None
    except OSError as exc:
        raise StoreCorruptError(path, None, f"cannot be read ({exc.strerror})") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise StoreCorruptError(
            path, field or "sha256", f"is {actual[:12]}... on disk, but {sha256[:12]}... was logged"
        )
    return data


def _categorical(values: list[Any], column: dict[str, Any], path: Path, name: str) -> Any:
    """A categorical column with the logged categories in their order and ``ordered`` flag."""
    import pandas as pd

    categories, ordered = column.get("categories"), column.get("ordered")
    if not isinstance(categories, list) or not isinstance(ordered, bool):
        raise StoreCorruptError(path, name, "holds categories that are not a list with an ordered flag")
    return pd.Categorical(values, categories=categories, ordered=ordered)


def _npy(data: bytes, path: Path) -> npt.NDArray[Any]:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]
    except ValueError as exc:
        raise StoreCorruptError(path, None, f"is not a .npy array ({exc})") from exc


def _wav_samples(data: bytes, path: Path, meta: dict[str, Any]) -> npt.NDArray[Any]:
    try:
        with wave.open(io.BytesIO(data), "rb") as clip:
            width, channels = clip.getsampwidth(), clip.getnchannels()
            raw = clip.readframes(clip.getnframes())
    except (wave.Error, EOFError) as exc:
        raise StoreCorruptError(path, None, f"is not a WAV file ({exc})") from exc
    dtype = _WAV_DTYPES.get(width)
    if dtype is None:
        raise StoreCorruptError(path, None, f"holds {width * 8}-bit samples, not 8, 16 or 32")
    if channels < 1 or len(raw) % (width * channels):
        raise StoreCorruptError(
            path, None, f"holds {len(raw)} bytes, not whole frames of {channels} channels"
        )
    samples: npt.NDArray[Any] = np.frombuffer(raw, dtype=dtype).reshape(-1, channels)
    return _as_logged_shape(samples, meta, path)


def _as_logged_shape(array: npt.NDArray[Any], meta: dict[str, Any], path: Path) -> npt.NDArray[Any]:
    """``array`` as decoded, in the shape the record names, which may only add or drop a last axis of
    one (a single-channel PNG or a mono WAV); any other shape is a :class:`StoreCorruptError` (a
    reshape would silently reorder the pixels or samples)."""
    shape = meta.get("shape")
    if shape is None:
        return array
    decoded = list(array.shape)
    squeezed = decoded[:-1] if decoded[-1:] == [1] else decoded
    ints = isinstance(shape, list) and all(type(size) is int for size in shape)
    if not ints or shape not in (decoded, squeezed, [*decoded, 1]):
        raise StoreCorruptError(path, "shape", f"is {shape!r}, but the file decodes to shape {decoded}")
    return array.reshape(shape)


def _image_cell(run_dir: Path, cell: Any, table: MediaItem, column: str) -> MediaItem | None:
    """A table's Image cell (``{"image": path, "sha256": ..., "preview": ...}``) as a :class:`MediaItem`."""
    if cell is None:
        return None
    image = cell.get("image") if isinstance(cell, dict) else None
    sha256 = cell.get("sha256") if isinstance(cell, dict) else None
    preview = cell.get("preview") if isinstance(cell, dict) else None
    if (
        not isinstance(image, str)
        or not MEDIA_PATH.fullmatch(image)
        or not isinstance(sha256, str)
        or not (preview is None or (isinstance(preview, str) and MEDIA_PATH.fullmatch(preview)))
    ):
        shown = json.dumps(cell, default=str)[:80]
        raise StoreCorruptError(table.path, column, f"holds {shown}, not an image cell of media/ files")
    caption, size = cell.get("caption"), cell.get("size")
    return MediaItem(
        name=f"{table.name}/{column}",
        step=table.step,
        kind="image",
        path=inside(run_dir, image, table.path, column),
        sha256=sha256,
        size=size if isinstance(size, int) and not isinstance(size, bool) else 0,
        caption=caption if isinstance(caption, str) else None,
        preview=None if preview is None else inside(run_dir, preview, table.path, column),
        meta={key: cell[key] for key in ("shape", "dtype", "format") if key in cell},
        time=table.time,
    )


__all__ = [
    "MediaItem",
    "checked_by_name",
    "item_of",
    "media_names",
    "media_of",
    "table_cells",
    "table_of",
    "verify_item",
    "verify_media",
]
