"""Media files and the ``MediaLogged`` records naming them, as a run folder holds them.

Files are written under ``<run>/media/<sha256>.<ext>`` in the store's formats: PNG (Pillow), exact
``.npy`` beside an 8-bit PNG preview, UTF-8 text, WAV (``wave``) and a JSON Table Schema table.
"""

from __future__ import annotations

import hashlib
import io
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtel.records import MediaKind, MediaLogged

T0 = 1_700_000_000.0


def pixels(height: int, width: int, seed: int = 0, channels: int = 3) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def store_file(run_dir: Path, data: bytes, ext: str) -> tuple[Path, str]:
    sha256 = hashlib.sha256(data).hexdigest()
    path = run_dir / "media" / f"{sha256}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, sha256


def png_bytes(array: npt.NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _record(
    run_dir: Path,
    name: str,
    step: int,
    kind: MediaKind,
    data: bytes,
    ext: str,
    meta: dict[str, Any],
    **kw: Any,
) -> MediaLogged:
    path, sha256 = store_file(run_dir, data, ext)
    return MediaLogged(
        name=name,
        step=step,
        time=T0 + step,
        kind=kind,
        path=str(path),
        sha256=sha256,
        size=len(data),
        meta=meta,
        **kw,
    )


def image(run_dir: Path, name: str, step: int, array: npt.NDArray[np.uint8], **kw: Any) -> MediaLogged:
    meta = {"shape": list(array.shape), "dtype": "uint8", "format": "png"}
    return _record(run_dir, name, step, "image", png_bytes(array), "png", meta, **kw)


def float_image(
    run_dir: Path, name: str, step: int, array: npt.NDArray[np.float32], **kw: Any
) -> MediaLogged:
    """An exact ``.npy`` and its 8-bit preview (``round(x * 255)`` for values in [0, 1])."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    preview, _ = store_file(run_dir, png_bytes(np.rint(array * 255).astype(np.uint8)), "png")
    meta = {"shape": list(array.shape), "dtype": str(array.dtype), "format": "npy"}
    return _record(run_dir, name, step, "image", buffer.getvalue(), "npy", meta, preview=str(preview), **kw)


def text(run_dir: Path, name: str, step: int, content: str, **kw: Any) -> MediaLogged:
    data = content.encode("utf-8")
    return _record(
        run_dir, name, step, "text", data, "txt", {"chars": len(content), "bytes": len(data)}, **kw
    )


def wav_bytes(samples: npt.NDArray[np.int16], rate: int) -> bytes:
    buffer = io.BytesIO()
    frames = samples.reshape(samples.shape[0], -1)
    with wave.open(buffer, "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(frames, dtype="<i2").tobytes())
    return buffer.getvalue()


def tone(frames: int, rate: int, channels: int = 1) -> npt.NDArray[np.int16]:
    t = np.arange(frames) / rate
    wave_ = np.rint(np.sin(2 * np.pi * 440 * t) * 20_000).astype(np.int16)
    return np.stack([wave_] * channels, axis=1) if channels > 1 else wave_


def audio(
    run_dir: Path, name: str, step: int, samples: npt.NDArray[np.int16], rate: int, **kw: Any
) -> MediaLogged:
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    meta = {
        "sample_rate": rate,
        "channels": channels,
        "frames": samples.shape[0],
        "dtype": "int16",
        "format": "wav",
    }
    return _record(run_dir, name, step, "audio", wav_bytes(samples, rate), "wav", meta, **kw)


def table(
    run_dir: Path,
    name: str,
    step: int,
    columns: list[tuple[str, str]],
    rows: list[list[Any]],
    cell_previews: bool = True,
    **kw: Any,
) -> MediaLogged:
    """A JSON Table Schema table; a cell of an ``image`` column is an array stored as its own file."""
    data = []
    for row in rows:
        cells: dict[str, Any] = {}
        for (column, dtype), cell in zip(columns, row, strict=True):
            if dtype == "image" and cell is not None:
                cell = _image_cell(run_dir, cell, f"cell {column}", cell_previews)
            cells[column] = cell
        data.append(cells)
    schema = {"fields": [{"name": c, "type": "any"} for c, _ in columns], "pandas_version": "1.4.0"}
    document = json.dumps({"schema": schema, "data": data}, allow_nan=True).encode("utf-8")
    meta = {"columns": [{"name": c, "dtype": d} for c, d in columns], "rows": len(rows)}
    return _record(run_dir, name, step, "table", document, "table.json", meta, **kw)


def _image_cell(run_dir: Path, array: npt.NDArray[Any], caption: str, preview: bool) -> dict[str, Any]:
    """A table's Image cell as the store writes it: a PNG, or an exact ``.npy`` (and its 8-bit preview,
    ``round(x * 255)`` for values in [0, 1]) for another dtype."""
    cell: dict[str, Any] = {}
    if array.dtype == np.uint8:
        path, sha256 = store_file(run_dir, png_bytes(array), "png")
    else:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        path, sha256 = store_file(run_dir, buffer.getvalue(), "npy")
        if preview:
            png, _ = store_file(run_dir, png_bytes(np.rint(array * 255).astype(np.uint8)), "png")
            cell["preview"] = str(png.relative_to(run_dir))
    meta = {"shape": list(array.shape), "dtype": str(array.dtype), "format": path.suffix[1:]}
    return {"image": str(path.relative_to(run_dir)), "sha256": sha256, "caption": caption, **cell, **meta}


def gallery(run_dir: Path, name: str, step: int, arrays: list[npt.NDArray[np.uint8]]) -> list[MediaLogged]:
    return [
        image(run_dir, name, step, array, index=i, count=len(arrays), caption=f"item {i}")
        for i, array in enumerate(arrays)
    ]
