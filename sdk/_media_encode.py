"""Media values as the bytes of their stored files (run on the flush thread, never in ``log``).

- Images: uint8 as a lossless PNG; any other dtype as its exact ``.npy`` plus an 8-bit PNG preview
  (:func:`preview_pixels` is the one conversion rule, also what 8-bit backends get).
- Text: UTF-8. Audio: int16, int32 and uint8 PCM as a WAV file of that width, exactly; any other
  dtype as its exact ``.npy`` plus a 16-bit WAV preview.
- Tables: a JSON Table Schema document (``pd.read_json(path, orient="table", precise_float=True)``
  reads it in one call, without pyarrow, with the schema's types; NaN and ±inf as JSON's
  ``NaN``/``Infinity``), written without pandas for rows; the exact column dtypes (and a
  categorical's categories) are kept in the record, which ``r.table()`` reads back exactly.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtel.media import Audio, Image, Table, Text, pil_to_array, pillow
from runtel.records import MediaKind

#: PCM widths a WAV file holds exactly (the ``wave`` module writes 8-bit unsigned, others signed).
_WAV_DTYPES = {np.dtype(np.uint8): 1, np.dtype("<i2"): 2, np.dtype("<i4"): 4}
#: JSON Table Schema field types by numpy dtype kind (pandas maps them back on read).
#: The largest int every one below which float64 holds exactly.
_FLOAT_EXACT = 2**53
_SCHEMA_TYPES = {"b": "boolean", "i": "integer", "u": "integer", "f": "number", "M": "datetime"}


@dataclass(frozen=True, slots=True)
class Encoded:
    """One media item's file (``data`` with extension ``ext``) and, for a non-exact format, its preview."""

    kind: MediaKind
    data: bytes
    ext: str
    meta: dict[str, Any]
    preview: tuple[bytes, str] | None = None
    caption: str | None = None


#: Writes a file's bytes with an extension; returns its path relative to the run folder and its sha256.
StoreFile = Callable[[bytes, str], tuple[str, str]]


def encode(item: Image | Table | Text | Audio, store_cell: StoreFile) -> Encoded:
    """``item``'s stored bytes; a table's Image cells are handed to ``store_cell`` as they come."""
    if isinstance(item, Image):
        return encode_image(item)
    if isinstance(item, Text):
        data = item.text.encode("utf-8")
        return Encoded(
            "text", data, "txt", {"chars": len(item.text), "bytes": len(data)}, caption=item.caption
        )
    if isinstance(item, Audio):
        return encode_audio(item)
    return encode_table(item, store_cell)


def image_array(image: Image) -> npt.NDArray[Any]:
    """The image's pixels in HW/HWC layout (a file given by path is decoded here, off the training thread)."""
    if image.array is not None:
        return image.array
    assert image.source is not None
    with pillow().open(io.BytesIO(image.source)) as picture:
        picture.load()
        return pil_to_array(picture)


def encode_image(image: Image) -> Encoded:
    array = np.ascontiguousarray(image_array(image))
    meta: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if image.source_dtype is not None:
        meta["source_dtype"] = image.source_dtype
    if array.dtype == np.uint8:
        return Encoded("image", png(array), "png", {**meta, "format": "png"}, caption=image.caption)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    preview = (png(preview_pixels(array)), "png")
    return Encoded("image", buffer.getvalue(), "npy", {**meta, "format": "npy"}, preview, image.caption)


def preview_pixels(array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """8-bit pixels of a non-uint8 image: the one rule every 8-bit consumer gets (``docs/media.md``).

    bool → 0/255; floats whose finite values lie in [0, 1] → ``round(x * 255)``; integers within
    [0, 255] → as they are; anything else is scaled from its finite min..max to 0..255. NaN → 0,
    +inf → 255, -inf → 0.
    """
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    low = float(values[finite].min()) if finite.any() else 0.0
    high = float(values[finite].max()) if finite.any() else 0.0
    if array.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif array.dtype.kind in "iu" and low >= 0.0 and high <= 255.0:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    scaled = np.where(np.isposinf(values), 255.0, np.where(finite, scaled, 0.0))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """Lossless PNG of HW or HWC (1, 3 or 4 channels) uint8 pixels."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buffer = io.BytesIO()
    pillow().fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_audio(audio: Audio) -> Encoded:
    waveform = audio.waveform
    frames = waveform.reshape(waveform.shape[0], -1)
    meta: dict[str, Any] = {
        "sample_rate": audio.sample_rate,
        "channels": int(frames.shape[1]),
        "frames": int(frames.shape[0]),
        "dtype": str(waveform.dtype),
        "shape": list(waveform.shape),
    }
    width = _WAV_DTYPES.get(waveform.dtype.newbyteorder("<"))  # big-endian PCM is written little-endian
    if width is not None:
        return Encoded(
            "audio",
            wav(frames, audio.sample_rate, width),
            "wav",
            {**meta, "format": "wav"},
            caption=audio.caption,
        )
    buffer = io.BytesIO()
    np.save(buffer, waveform, allow_pickle=False)
    preview = (wav(preview_samples(frames), audio.sample_rate, 2), "wav")
    return Encoded("audio", buffer.getvalue(), "npy", {**meta, "format": "npy"}, preview, audio.caption)


def preview_samples(frames: npt.NDArray[Any]) -> npt.NDArray[np.int16]:
    """16-bit PCM of a waveform WAV cannot hold exactly: floats clipped to [-1, 1], integers scaled by
    their type's range, bool as 0/full scale; times 32767, rounded."""
    if frames.dtype.kind == "f":
        values = np.clip(frames.astype(np.float64), -1.0, 1.0)
    elif frames.dtype.kind == "b":
        values = frames.astype(np.float64)
    else:
        info = np.iinfo(frames.dtype)
        values = frames.astype(np.float64) / float(max(abs(info.min), info.max))
    return np.rint(values * 32767.0).astype(np.int16)


def wav(frames: npt.NDArray[Any], sample_rate: int, width: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(int(frames.shape[1]))
        out.setsampwidth(width)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(frames, dtype=frames.dtype.newbyteorder("<")).tobytes())
    return buffer.getvalue()


def encode_table(table: Table, store_cell: StoreFile) -> Encoded:
    """The table as JSON Table Schema; each Image cell becomes ``{"image": path, "sha256": ...}``."""
    names, dtypes, columns = _columns_of(table)
    fields = []
    for name, dtype, cells in zip(names, dtypes, columns, strict=True):
        if dtype == "image":
            columns[names.index(name)] = [_image_cell(cell, store_cell) for cell in cells]
        field = {"name": name, "type": _schema_type(dtype, cells)}
        if dtype.startswith("datetime64[") and ", " in dtype:  # tz-aware: pandas reads the zone from "tz"
            field["tz"] = dtype[dtype.index(", ") + 2 : -1]
        fields.append(field)
    rows = len(columns[0]) if columns else 0
    data = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    document = {"schema": {"fields": fields, "pandas_version": "1.4.0"}, "data": data}
    text = json.dumps(document, ensure_ascii=False, allow_nan=True)
    meta = {"columns": _column_meta(table, names, dtypes), "rows": rows}
    return Encoded("table", text.encode("utf-8"), "table.json", meta)


def _column_meta(table: Table, names: list[str], dtypes: list[str]) -> list[dict[str, Any]]:
    """Each column's name and dtype; a pandas categorical also keeps its categories (in their order)
    and whether they are ordered, which the dtype name alone loses."""
    found: list[dict[str, Any]] = []
    for position, (name, dtype) in enumerate(zip(names, dtypes, strict=True)):
        column: dict[str, Any] = {"name": name, "dtype": dtype}
        if dtype == "category":
            categorical = table.frame.iloc[:, position].cat
            column["categories"] = [_python_value(value) for value in categorical.categories.tolist()]
            column["ordered"] = bool(categorical.ordered)
        found.append(column)
    return found


def _image_cell(cell: Any, store_cell: StoreFile) -> dict[str, Any] | None:
    if cell is None:
        return None
    encoded = encode_image(cell)
    path, sha256 = store_cell(encoded.data, encoded.ext)
    preview = None if encoded.preview is None else store_cell(*encoded.preview)[0]
    return {
        "image": path,
        "sha256": sha256,
        "size": len(encoded.data),
        "caption": encoded.caption,
        "preview": preview,
        **encoded.meta,
    }


def _columns_of(table: Table) -> tuple[list[str], list[str], list[list[Any]]]:
    """Column names, their dtypes (numpy/pandas names, or ``image``) and their cells as Python values."""
    frame = table.frame
    if frame is None:
        columns = [[row[k] for row in table.rows] for k in range(len(table.columns))]
        return table.columns, [_infer_dtype(cells) for cells in columns], columns
    if type(frame).__module__.startswith("polars"):
        values = frame.to_dict(as_series=False)
        columns = [list(values[name]) for name in table.columns]
        dtypes = [
            _polars_dtype(frame[name]) or _infer_dtype(cells)
            for name, cells in zip(table.columns, columns, strict=True)
        ]
        return table.columns, dtypes, columns
    dtypes, columns = [], []
    for position in range(len(table.columns)):
        series = frame.iloc[:, position]
        dtype = str(series.dtype)
        if series.dtype.kind == "M":
            cells = [
                None if value is None or value != value else value.isoformat() for value in series.tolist()
            ]
        else:
            cells = [_python_value(value) for value in series.tolist()]
        if dtype == "object" and any(type(cell) is Image for cell in cells):
            dtype = "image"  # Table checked the rest of the column is missing cells (None, NaN, NA)
            cells = [cell if type(cell) is Image else None for cell in cells]
        dtypes.append(dtype)
        columns.append(cells)
    return table.columns, dtypes, columns


def _polars_dtype(series: Any) -> str | None:
    """The pandas dtype name of a polars numeric or boolean column (a nullable one when it has nulls),
    so Int8, Float32 or UInt64 come back as such; None for the others (inferred from the cells)."""
    dtype = series.dtype
    nulls = series.null_count() > 0
    if dtype.is_integer():
        return str(dtype) if nulls else str(dtype).lower()  # Int8 -> int8, UInt64 -> uint64
    if dtype.is_float():
        return str(dtype) if nulls else str(dtype).lower()
    if str(dtype) == "Boolean":
        return "boolean" if nulls else "bool"
    return None


def _python_value(value: Any) -> Any:
    """A cell as JSON can hold it: numpy scalars as Python ones, pandas' NA and NaT as null (NaN stays)."""
    if isinstance(value, np.generic):
        return value.item()
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _infer_dtype(cells: list[Any]) -> str:
    """The pandas dtype of a column of these Python values (None is a missing value, not a type)."""
    types = {type(cell) for cell in cells} - {type(None)}
    missing = len(types) < len({type(cell) for cell in cells})
    if not types:
        return "object"
    if types == {Image}:
        return "image"
    if types == {bool}:
        return "boolean" if missing else "bool"
    if types == {int}:
        return "Int64" if missing else "int64"
    if types <= {int, float} and not missing:
        exact = all(type(cell) is float or abs(cell) <= _FLOAT_EXACT for cell in cells)
        return "float64" if exact else "object"  # an int beyond 2**53 would be rounded as float64
    return "object"


def _schema_type(dtype: str, cells: list[Any]) -> str:
    """The JSON Table Schema type of a column, so that ``pd.read_json(orient="table")`` types it."""
    if dtype == "object":
        return "string" if all(type(cell) is str or cell is None for cell in cells) else "any"
    if dtype in ("str", "string"):
        return "string"
    if dtype.startswith(("Int", "UInt")):
        return "integer"
    if dtype.startswith("Float"):
        return "number"
    if dtype == "boolean":
        return "boolean"
    if dtype.startswith("datetime64"):
        return "datetime"
    try:
        return _SCHEMA_TYPES.get(np.dtype(dtype).kind, "any")
    except TypeError:  # category and other pandas-only dtypes
        return "any"


__all__ = ["Encoded", "encode", "image_array", "png", "preview_pixels", "preview_samples", "wav"]
