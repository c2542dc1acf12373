"""Rich values for ``run.log``: :class:`Image`, :class:`Table`, :class:`Text` and :class:`Audio`.

Each constructor validates its input and copies what the caller may change next step (an array, a
DataFrame, the rows of a list), and nothing more: encoding (PNG, WAV, ``.npy``, the table file) and
writing happen on the run's flush thread (:mod:`runtel.store._media_writer`). A bad input raises
:class:`~runtel.errors.InvalidMediaError` at the call, naming the value and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from runtel._media_buffers import copy_of
from runtel._values import encodable
from runtel.errors import InvalidMediaError

#: Channel counts an image may have in its last (HWC) or first (CHW) axis: gray, RGB, RGBA.
_CHANNELS = (1, 3, 4)
#: numpy dtype kinds an image or waveform may hold: bool, signed, unsigned, float.
_NUMERIC_KINDS = "biuf"
#: Python types a table cell may hold as it is (numpy scalars are turned into these).
_CELL_TYPES = (type(None), bool, int, float, str)
_MAX_SAMPLE_RATE = 2**31 - 1
#: The longest caption, in characters: a caption is a label shown beside the item, not a document.
MAX_CAPTION_CHARS = 10_000
#: The most channels a WAV file's header can hold.
_MAX_CHANNELS = 65535
#: pandas' own dtypes a DataFrame column may have besides numpy's numbers, bools and datetimes.
_PANDAS_DTYPES = {"str", "string", "category", "boolean", *(f"Int{b}" for b in (8, 16, 32, 64))}
_PANDAS_DTYPES |= {f"UInt{b}" for b in (8, 16, 32, 64)} | {"Float32", "Float64"}
_INT64 = (-(2**63), 2**63 - 1)


class Image:
    """An image: numpy HWC/CHW/HW array, torch tensor, PIL image, file path or matplotlib figure.

    ``array`` is the copy taken at the call, in HWC (or HW) layout, or None for a file path, whose
    bytes are read at the call and decoded off the training thread (``source``). A 3-D array is
    HWC when its last axis has 1, 3 or 4 channels, else CHW when its first axis has; a torch
    tensor is read CHW first, as torch lays images out.
    """

    __slots__ = ("array", "caption", "owned", "source", "source_dtype")

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self.caption = _check_caption(caption)
        self.source: bytes | None = None
        self.source_dtype: str | None = None
        self.array: npt.NDArray[Any] | None = None
        #: Only runtel holds this image (``log_image`` built it): its buffer is reused once encoded.
        self.owned = False
        if isinstance(data, str | os.PathLike):
            self.source = _read_image_file(data)
            return
        if type(data).__module__.startswith("torch") and hasattr(data, "detach"):
            self.array = _pixels(_tensor_to_array(data, self), prefer_chw=True)
        elif type(data).__module__.startswith("PIL.") and hasattr(data, "mode"):
            self.array = _pixels(pil_to_array(data), prefer_chw=False)
        elif hasattr(data, "savefig") and hasattr(data, "canvas"):
            self.array = _figure_to_array(data)
        elif isinstance(data, np.ndarray):
            self.array = _pixels(np.array(data, copy=True), prefer_chw=False)
        else:
            raise InvalidMediaError(
                f"Image takes a numpy array, torch tensor, PIL image, file path or matplotlib figure, "
                f"got {type(data).__name__}"
            )

    def __repr__(self) -> str:
        what = f"shape={self.array.shape}, dtype={self.array.dtype}" if self.array is not None else "file"
        return f"Image({what}, caption={self.caption!r})"


class Text:
    """A piece of text (generated samples, a prompt): stored as UTF-8."""

    __slots__ = ("caption", "text")

    def __init__(self, text: str, caption: str | None = None) -> None:
        if not isinstance(text, str):
            raise InvalidMediaError(f"Text takes a str, got {type(text).__name__}; pass str(value)")
        if not encodable(text):
            raise InvalidMediaError(
                "Text holds a lone surrogate and cannot be stored as UTF-8; decode the bytes it came "
                "from with a real encoding (or errors='replace')"
            )
        self.text = text
        self.caption = _check_caption(caption)

    def __repr__(self) -> str:
        return f"Text({len(self.text)} characters)"


class Audio:
    """A waveform at ``sample_rate`` Hz: 1-D (mono) or 2-D. A numpy array is (frames, channels); a
    torch tensor is (channels, frames), as torchaudio lays audio out, and is transposed at the call.
    More channels than frames, or than a WAV file holds (65535), is refused as a likely mixed-up layout.

    Integer PCM (int16, int32, uint8) is stored as a WAV file of that width, exactly; any other
    dtype keeps its exact array as ``.npy`` beside a 16-bit WAV preview (see ``docs/media.md``).
    """

    __slots__ = ("caption", "sample_rate", "waveform")

    def __init__(self, waveform: Any, sample_rate: int, caption: str | None = None) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
            raise InvalidMediaError(
                f"Audio sample_rate must be an int (Hz), got {type(sample_rate).__name__} {sample_rate!r}"
            )
        if not 0 < int(sample_rate) <= _MAX_SAMPLE_RATE:
            raise InvalidMediaError(
                f"Audio sample_rate must be from 1 to {_MAX_SAMPLE_RATE} Hz, got {sample_rate}"
            )
        if type(waveform).__module__.startswith("torch") and hasattr(waveform, "detach"):
            array = _tensor_to_array(waveform, None)
            array = array.T if array.ndim == 2 else array  # torchaudio's (channels, frames)
        elif isinstance(waveform, np.ndarray):
            array = np.array(waveform, copy=True)
        else:
            raise InvalidMediaError(
                f"Audio takes a numpy array or torch tensor, got {type(waveform).__name__}"
            )
        if array.ndim not in (1, 2) or array.size == 0 or array.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidMediaError(
                f"Audio needs a non-empty 1-D (mono) or 2-D (frames, channels) array of numbers, "
                f"got shape {array.shape} and dtype {array.dtype}"
            )
        if array.ndim == 2 and (array.shape[1] > _MAX_CHANNELS or array.shape[1] > array.shape[0]):
            raise InvalidMediaError(
                f"Audio of shape {array.shape} would be {array.shape[1]} channels of {array.shape[0]} "
                f"frames (at most {_MAX_CHANNELS} channels, and no more than frames): a numpy waveform "
                "is (frames, channels), a torch tensor (channels, frames); pass waveform.T if it is the "
                "other way round"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidMediaError("Audio waveform holds NaN or infinity; a WAV file cannot play it")
        self.waveform = array
        self.sample_rate = int(sample_rate)
        self.caption = _check_caption(caption)

    def __repr__(self) -> str:
        return f"Audio(shape={self.waveform.shape}, sample_rate={self.sample_rate})"


class Table:
    """Rows and columns: a pandas or polars DataFrame, a list of rows (with ``columns``) or of dicts.

    Cells may be None, bool, int, float (NaN and ±inf kept), str, numpy scalars or :class:`Image`.
    The rows are copied at the call; column types and every cell are stored exactly.
    """

    __slots__ = ("columns", "frame", "rows")

    def __init__(self, data: Any, columns: Sequence[str] | None = None) -> None:
        #: A deep copy of a pandas DataFrame, or a polars DataFrame (immutable), else None.
        self.frame: Any = None
        self.rows: list[list[Any]] = []
        module = type(data).__module__
        if module.startswith("pandas") and hasattr(data, "dtypes"):
            self.columns = _check_columns([str(name) for name in data.columns])
            self.frame = data.copy(deep=True)
            self._check_frame_cells()
        elif module.startswith("polars") and hasattr(data, "schema"):
            self.columns = _check_columns(list(data.columns))
            for name, dtype in data.schema.items():
                if not (dtype.is_numeric() or str(dtype) in ("Boolean", "String", "Utf8", "Null")):
                    raise InvalidMediaError(
                        f"Table column {name!r} has polars dtype {dtype}, which cannot be stored; "
                        "cast it to numbers, bool or str"
                    )
            self.frame = data  # polars frames are immutable: nothing to copy
        elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
            self.columns, self.rows = _rows_of(data, columns)
        else:
            raise InvalidMediaError(
                "Table takes a pandas or polars DataFrame, a list of rows (with columns=) or a list of "
                f"dicts, got {type(data).__name__}"
            )
        if columns is not None and self.frame is not None:
            raise InvalidMediaError(
                "Table: columns= is for a list of rows; a DataFrame names its own columns"
            )

    def _check_frame_cells(self) -> None:
        for position, (name, dtype) in enumerate(zip(self.columns, self.frame.dtypes, strict=True)):
            if str(dtype) in _PANDAS_DTYPES:  # before kind "O": pandas' string dtype is of that kind too
                continue
            if dtype.kind == "O":
                _check_cells(name, self.frame.iloc[:, position].tolist())
            elif dtype.kind not in "biufM":
                raise InvalidMediaError(
                    f"Table column {name!r} has dtype {dtype}, which cannot be stored; "
                    "convert it with .astype() to numbers, bool, str or datetime64"
                )

    @property
    def row_count(self) -> int:
        return len(self.frame) if self.frame is not None else len(self.rows)

    def __repr__(self) -> str:
        return f"Table({self.row_count} rows, columns={self.columns!r})"


def owned_image(data: Any, caption: str | None) -> Image:
    """An Image for ``log_image``, which the caller never sees: a numpy array's copy goes into a reused
    buffer (:mod:`runtel._media_buffers`), handed back once the flush has encoded it."""
    if not isinstance(data, np.ndarray) or data.dtype.kind not in _NUMERIC_KINDS:
        return Image(data, caption)
    image = Image.__new__(Image)
    image.caption = _check_caption(caption)
    image.source = image.source_dtype = None
    image.array = _pixels(copy_of(data), prefer_chw=False)
    image.owned = True
    return image


#: The value types ``run.log`` takes beside scalars (a list of Images is a gallery).
MEDIA_TYPES = (Image, Table, Text, Audio)
Media = Image | Table | Text | Audio


def as_media_items(name: str, value: Any) -> tuple[Media, ...] | None:
    """``value`` as the media items logged under ``name`` at one step; None when it holds no media."""
    if isinstance(value, MEDIA_TYPES):
        return (value,)
    if isinstance(value, list | tuple) and value and isinstance(value[0], MEDIA_TYPES):
        kinds = {type(item) for item in value}
        if len(kinds) != 1 or not kinds <= set(MEDIA_TYPES):
            raise InvalidMediaError(
                f"{name!r}: a list logged at one step is a gallery of one kind (all Image, all Text...), "
                f"got {', '.join(sorted(kind.__name__ for kind in kinds))}"
            )
        return tuple(value)
    return None


def _check_caption(caption: object) -> str | None:
    if caption is None:
        return None
    if not isinstance(caption, str):
        raise InvalidMediaError(f"caption must be a str, got {type(caption).__name__} {caption!r}")
    if len(caption) > MAX_CAPTION_CHARS:
        raise InvalidMediaError(
            f"caption is {len(caption)} characters, over {MAX_CAPTION_CHARS}: log long text with "
            f"runtel.Text and keep the caption short (it begins {caption[:40]!r})"
        )
    if not encodable(caption):
        raise InvalidMediaError(f"caption {caption!r} holds a lone surrogate and cannot be stored as UTF-8")
    return caption


def _tensor_to_array(tensor: Any, image: Image | None) -> npt.NDArray[Any]:
    """A copy of ``tensor`` on the CPU (a CUDA tensor is copied to the host; bfloat16 → float32, exactly)."""
    data = tensor.detach()
    if str(data.dtype) == "torch.bfloat16":
        if image is not None:
            image.source_dtype = "bfloat16"
        data = data.float()  # every bfloat16 value is a float32 value: nothing is rounded
    if data.device.type != "cpu":
        return data.cpu().numpy()  # type: ignore[no-any-return]  # already a fresh host copy
    return np.array(data.numpy(), copy=True)


def pil_to_array(picture: Any) -> npt.NDArray[Any]:
    """A PIL image's pixels; palette and other packed modes are expanded to RGB(A) first."""
    if picture.mode not in ("1", "L", "RGB", "RGBA", "I", "I;16", "F"):
        has_alpha = "A" in picture.mode or "transparency" in picture.info
        picture = picture.convert("RGBA" if has_alpha else "RGB")
    return np.array(picture)


def _figure_to_array(figure: Any) -> npt.NDArray[np.uint8]:
    """A matplotlib figure rendered now (it may be changed or closed next step) as RGBA pixels."""
    canvas = figure.canvas
    if not hasattr(canvas, "buffer_rgba"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8, copy=True)


def _pixels(array: npt.NDArray[Any], *, prefer_chw: bool) -> npt.NDArray[Any]:
    """``array`` (already a copy) checked and seen as HW or HWC."""
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidMediaError(
            f"Image pixels must be bool, integers or floats, got dtype {array.dtype}; convert with .astype()"
        )
    if array.size == 0:
        raise InvalidMediaError(f"Image is empty (shape {array.shape})")
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        chw = array.shape[0] in _CHANNELS
        hwc = array.shape[-1] in _CHANNELS
        if chw and (prefer_chw or not hwc):
            return array.transpose(1, 2, 0)
        if hwc:
            return array
    raise InvalidMediaError(
        f"Image needs shape HW, HWC or CHW with 1, 3 or 4 channels, got {array.shape}; "
        "for a batch log a list of Images (a gallery)"
    )


def _read_image_file(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, read now (it may be overwritten next step), checked to be an image Pillow opens."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InvalidMediaError(f"Image file {os.fspath(path)!r} cannot be read: {exc.strerror}") from None
    import io

    pil = pillow()
    try:
        with pil.open(io.BytesIO(raw)) as picture:
            picture.size  # noqa: B018  # the header is parsed: a file Pillow cannot read fails here
    except (pil.UnidentifiedImageError, OSError) as exc:
        raise InvalidMediaError(
            f"Image file {os.fspath(path)!r} is not an image Pillow can read ({exc})"
        ) from None
    return raw


def pillow() -> Any:
    """``PIL.Image``, or :class:`~runtel.errors.MissingExtraError` naming the extra to install."""
    try:
        from PIL import Image as pil
    except ImportError:
        from runtel.errors import MissingExtraError

        raise MissingExtraError("images need Pillow: pip install 'runtel[media]'") from None
    return pil


def _check_columns(columns: list[Any]) -> list[str]:
    if not columns:
        raise InvalidMediaError("Table has no columns; pass columns= or rows of dicts")
    for column in columns:
        if not isinstance(column, str) or not column or not encodable(column):
            raise InvalidMediaError(f"Table column names must be non-empty str, got {column!r}")
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise InvalidMediaError(f"Table column names repeat: {', '.join(map(repr, repeated))}")
    return columns


def _rows_of(data: Sequence[Any], columns: Sequence[str] | None) -> tuple[list[str], list[list[Any]]]:
    """Columns and a copy of each row (cells checked) from a list of rows or of dicts."""
    if data and all(isinstance(row, Mapping) for row in data):
        keys = dict.fromkeys(key for row in data for key in row) if columns is None else columns
        names = _check_columns(list(keys))
        rows = [[row.get(name) for name in names] for row in data]
    else:
        if columns is None:
            raise InvalidMediaError("Table from a list of rows needs columns=[...] naming each column")
        names = _check_columns(list(columns))
        rows = []
        for number, row in enumerate(data):
            if isinstance(row, str | bytes | Mapping) or not isinstance(row, Sequence):
                raise InvalidMediaError(f"Table row {number} is a {type(row).__name__}, not a list of cells")
            if len(row) != len(names):
                raise InvalidMediaError(f"Table row {number} has {len(row)} cells for {len(names)} columns")
            rows.append(list(row))
    for position, name in enumerate(names):
        column = [row[position] for row in rows]
        cleaned = _check_cells(name, column)
        if cleaned is not column:
            for row, cell in zip(rows, cleaned, strict=True):
                row[position] = cell
    return names, rows


def is_missing(cell: Any) -> bool:
    """None, NaN, or pandas' NA/NaT: a missing cell (in a column of Images it is stored as null)."""
    return (
        cell is None or (type(cell) is float and cell != cell) or type(cell).__name__ in ("NAType", "NaTType")
    )


def _check_cells(name: str, cells: list[Any]) -> list[Any]:
    """``cells`` if each is a storable value; numpy scalars become Python values and pandas' NA None
    (a new list then). A column holding an Image holds only Images and missing cells (as None)."""
    if not set(map(type, cells)) <= {*_CELL_TYPES, Image}:
        cells = [_cell(name, number, cell) for number, cell in enumerate(cells)]
    if any(type(cell) is Image for cell in cells):
        others = sorted({type(c).__name__ for c in cells if type(c) is not Image and not is_missing(c)})
        if others:
            raise InvalidMediaError(
                f"Table column {name!r} mixes Image cells with {', '.join(others)} cells; a column of "
                "images may hold only runtel.Image and missing values (None or NaN): put the others "
                "in a column of their own"
            )
        if not all(type(cell) is Image or cell is None for cell in cells):
            cells = [cell if type(cell) is Image else None for cell in cells]
    texts = [cell for cell in cells if type(cell) is str]
    if texts and not encodable("".join(texts)):
        raise InvalidMediaError(
            f"Table column {name!r}: a cell holds a lone surrogate, which UTF-8 cannot store"
        )
    numbers = [cell for cell in cells if type(cell) is int]
    if numbers and not (_INT64[0] <= min(numbers) and max(numbers) <= _INT64[1]):
        raise InvalidMediaError(
            f"Table column {name!r}: an int beyond int64 cannot be stored exactly; log it as str or float"
        )
    return cells


def _cell(name: str, number: int, cell: Any) -> Any:
    if isinstance(cell, np.generic) and cell.dtype.kind in "biufU":
        cell = cell.item()
    if type(cell).__name__ in ("NAType", "NaTType"):
        return None
    if not isinstance(cell, (*_CELL_TYPES, Image)):
        raise InvalidMediaError(
            f"Table column {name!r} row {number}: a cell is a {type(cell).__name__}; cells may be None, "
            "bool, int, float, str, numpy scalars or runtel.Image"
        )
    return cell


__all__ = [
    "MAX_CAPTION_CHARS",
    "MEDIA_TYPES",
    "Audio",
    "Image",
    "Media",
    "Table",
    "Text",
    "as_media_items",
    "pil_to_array",
]
