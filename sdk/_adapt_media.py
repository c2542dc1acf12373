"""Media records fitted to a backend's :class:`~runtel.exporters.base.Capabilities`, every change reported.

Part of the one adaptation step (``runtel._adapt`` calls it for each ``MediaLogged``). What a backend
cannot hold is changed here and only here: a kind it lacks is left out, a non-uint8 image is sent as
its 8-bit preview, an image too large is scaled down, a gallery is split into single images or cut,
and a table, text or clip over a limit is cut with the full file sent beside it as an artifact. The
derived files are written content-addressed under the exporter's scratch folder; the local store
keeps every original.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel._adapt_steps import StepFitter
from runtel.errors import MissingExtraError, RuntelError
from runtel.exporters._media import image_cell_label, image_cell_text, read_document
from runtel.exporters.base import Capabilities
from runtel.records import ArtifactLogged, MediaLogged, Record
from runtel.store.media import checked_by_name

if TYPE_CHECKING:
    from runtel._adapt import Report

#: The report kind for a media kind the backend does not take (as ``figures_left_out``).
LEFT_OUT = {
    "image": "images_left_out",
    "table": "tables_left_out",
    "text": "text_left_out",
    "audio": "audio_left_out",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: kind -> (report kind, dtype, format) of the preview a backend without ``exact_arrays`` is sent
_PREVIEWS = {
    "image": ("image_sent_as_8bit", "uint8", "png"),
    "audio": ("audio_sent_as_16bit", "int16", "wav"),
}


#: The stored record and the records to send before the fitted one (where its full file goes).
_Full = tuple[MediaLogged, list[Record]]


class MediaFitter:
    """Per-exporter media state of one run: the steps sent per media series and per gallery."""

    def __init__(
        self,
        capabilities: Capabilities,
        report: Report,
        steps: StepFitter,
        scratch: Path,
        key: Callable[[str], str],
        artifact: Callable[[ArtifactLogged], ArtifactLogged],
    ) -> None:
        self._caps = capabilities
        self._report = report
        self._steps = steps
        self._scratch = scratch / "media"
        self._key = key
        self._artifact = artifact
        #: per media series: the original step of its last gallery and the step it was sent at
        self._gallery_step: dict[str, tuple[int, int]] = {}

    def fit(self, record: MediaLogged) -> list[Record]:
        """``record`` as the backend can hold it, after any full-size artifact; ``[]`` when left out."""
        caps = self._caps
        if record.kind not in caps.media:
            self._note_left_out(record, f"the backend takes no {record.kind} media")
            return []
        extra: list[Record] = []
        source = record  # the stored file, what a full-size artifact sends
        if record.count > 1 and record.kind not in caps.galleries:
            if record.index == 0:
                example = {
                    "name": record.name,
                    "step": record.step,
                    "kind": record.kind,
                    "items": record.count,
                }
                self._report.note("gallery_split", 1, [{**example, "sent_as": f"{record.name}/0..."}])
            record = dataclasses.replace(record, name=f"{record.name}/{record.index}", index=0, count=1)
        if record.meta.get("format") == "npy" and record.kind in _PREVIEWS and not caps.exact_arrays:
            fitted = self._preview(record)
            if fitted is None:
                return []
            record = fitted
        if record.kind == "image":
            fitted = self._image(record)
            if fitted is None:
                return []
            record = fitted
        elif record.kind == "table":
            if caps.max_table_rows is not None:
                record = self._cut(record, "rows", caps.max_table_rows, "table_cut", (source, extra))
            if not caps.exact_arrays:
                record = self._cell_previews(record)
            if not caps.table_images:
                record = self._images_as_text(record, every=True)
            elif not caps.table_image_gaps:
                record = self._images_as_text(record, every=False)
            if not caps.table_infinity:
                record = self._infinity_as_null(record, (source, extra))
        elif record.kind == "text" and caps.max_text_chars is not None:
            record = self._cut(record, "chars", caps.max_text_chars, "text_truncated", (source, extra))
        elif record.kind == "audio" and caps.max_audio_seconds is not None:
            record = self._cut_audio(record, caps.max_audio_seconds, (source, extra))
        if record.caption is not None and record.kind not in caps.captions:
            example = {
                "name": record.name,
                "step": record.step,
                "kind": record.kind,
                "caption": record.caption[:80],
            }
            self._report.note("caption_left_out", 1, [example])
            record = dataclasses.replace(record, caption=None)
        name = self._key(record.name)
        if name != record.name:
            record = dataclasses.replace(record, name=name)
        return [*extra, self._restep(record)]

    def _note_left_out(self, record: MediaLogged, reason: str) -> None:
        example = {"name": record.name, "step": record.step, "index": record.index, "reason": reason}
        self._report.note(LEFT_OUT[record.kind], 1, [example])

    # ------------------------------------------------------------------ images
    def _image(self, record: MediaLogged) -> MediaLogged | None:
        caps = self._caps
        limit = caps.max_gallery_items
        if limit is not None and record.count > limit:
            if record.index == 0:
                example = {"name": record.name, "step": record.step, "items": record.count, "sent": limit}
                self._report.note("gallery_cut", record.count - limit, [example])
            if record.index >= limit:
                return None
            record = dataclasses.replace(record, count=limit)
        if record.meta.get("format") == "png" and (caps.max_image_side or caps.max_image_bytes):
            record = self._shrink(record)
        return record

    def _preview(self, record: MediaLogged) -> MediaLogged | None:
        """An exact ``.npy`` image or clip as the 8-bit PNG or 16-bit WAV preview stored beside it."""
        kind, dtype, fmt = _PREVIEWS[record.kind]
        if record.preview is None:
            self._note_left_out(record, f"an exact array without its {fmt.upper()} preview")
            return None
        example = {
            "name": record.name,
            "step": record.step,
            "dtype": record.meta.get("dtype"),
            "sent_as": dtype,
        }
        self._report.note(kind, 1, [example])
        fitted = _as_file(record, record.preview, {**record.meta, "dtype": dtype, "format": fmt})
        return dataclasses.replace(fitted, preview=None)

    def _shrink(self, record: MediaLogged) -> MediaLogged:
        """A PNG over the side or byte limit, scaled down (keeping its aspect) until it fits."""
        side, most = self._caps.max_image_side, self._caps.max_image_bytes
        width, height = png_size(record.path)
        scale = 1.0 if side is None else min(1.0, side / max(width, height))
        if scale == 1.0 and (most is None or record.size <= most):
            return record
        image = _open_image(record.path)
        while True:
            size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
            data = _png_bytes(image.resize(size) if size != image.size else image)
            if most is None or len(data) <= most or size == (1, 1):
                break
            scale *= min(0.9, math.sqrt(most / len(data)))
        target = self._write(data, f"{record.sha256}-{size[0]}x{size[1]}.png")
        shape = list(record.meta.get("shape") or [height, width])
        shape[:2] = [size[1], size[0]]
        example = {"name": record.name, "step": record.step, "size": [width, height], "sent_as": list(size)}
        self._report.note("image_resized", 1, [example])
        return _as_file(record, str(target), {**record.meta, "shape": shape})

    # ------------------------------------------------------------------ tables, text, audio
    def _cut(self, record: MediaLogged, unit: str, limit: int, kind: str, full: _Full) -> MediaLogged:
        """A table (rows) or text (characters) over ``limit`` cut to it; the full file as an artifact."""
        total = record.meta.get(unit)
        if not isinstance(total, int) or total <= limit:
            return record
        filename = f"{record.sha256}-{limit}{unit}{''.join(Path(record.path).suffixes)}"
        if record.kind == "table":
            document = read_document(record.path)
            document["data"] = document["data"][:limit]
            target = self._write_table(record, document, filename)
        else:
            text = Path(record.path).read_text(encoding="utf-8")
            target = self._write(text[:limit].encode("utf-8"), filename)
        attached = self._full_artifact(*full)
        example = {"name": record.name, "step": record.step, unit: total, "sent": limit, "full": attached}
        self._report.note(kind, 1, [example])
        return _as_file(record, str(target), {**record.meta, unit: limit})

    def _cell_previews(self, record: MediaLogged) -> MediaLogged:
        """Image cells stored as exact ``.npy`` arrays, as 8-bit PNGs by the store's one preview rule."""
        columns = [
            c["name"]
            for c in record.meta.get("columns", [])
            if isinstance(c, dict) and c.get("dtype") == "image"
        ]
        if not columns:
            return record
        document = read_document(record.path)
        root = Path(record.path).resolve().parent.parent
        examples: list[dict[str, Any]] = []
        for row in document["data"]:
            for column in columns:
                cell = row.get(column)
                if not isinstance(cell, dict) or not str(cell.get("image", "")).endswith(".npy"):
                    continue
                stored = cell.get("preview")
                source = (root / str(stored if isinstance(stored, str) else cell["image"])).resolve()
                if not source.is_relative_to(root):
                    raise RuntelError(f"a table's Image cell names {str(source)!r}, outside the run folder")
                # the preview stored beside the array, or (a cell written without one) made by the same rule
                # (a stored preview is checked against the hash its content-addressed name holds)
                data = checked_by_name(source, column) if isinstance(stored, str) else _preview_png(source)
                sha256 = hashlib.sha256(data).hexdigest()
                self._write(data, f"{sha256}.png")
                row[column] = {
                    **cell,
                    "image": f"media/{sha256}.png",
                    "sha256": sha256,
                    "size": len(data),
                    "preview": None,
                    "dtype": "uint8",
                    "format": "png",
                }
                examples.append(
                    {
                        "name": record.name,
                        "step": record.step,
                        "column": column,
                        "dtype": cell.get("dtype"),
                        "sent_as": "uint8",
                    }
                )
        if not examples:
            return record
        self._report.note("image_sent_as_8bit", len(examples), examples[:5])
        target = self._write_table(record, document, f"{record.sha256}-8bit-cells.table.json")
        return _as_file(record, str(target), record.meta)

    def _images_as_text(self, record: MediaLogged, *, every: bool) -> MediaLogged:
        """Image columns as text: ``every`` one, for a backend whose tables hold no images (each cell as
        ``[image <file>] <caption>``), else those with empty cells, for one whose image columns must be
        full (each cell as its path in the run folder)."""
        columns = [
            c for c in record.meta.get("columns", []) if isinstance(c, dict) and c.get("dtype") == "image"
        ]
        if not columns:
            return record
        document = read_document(record.path)
        gappy = {c["name"]: sum(row.get(c["name"]) is None for row in document["data"]) for c in columns}
        gappy = {name: empty for name, empty in gappy.items() if empty or every}
        if not gappy:
            return record
        for row in document["data"]:
            for name in gappy:
                row[name] = (image_cell_label if every else image_cell_text)(row.get(name))
        for field in document["schema"]["fields"]:
            if field["name"] in gappy:
                field["type"] = "string"
        target = self._write_table(record, document, f"{record.sha256}-images-as-text.table.json")
        examples = [
            {"name": record.name, "step": record.step, "column": c, "empty_cells": n}
            for c, n in gappy.items()
        ]
        self._report.note("table_images_as_text", len(gappy), examples)
        meta_columns = [
            {**c, "dtype": "object"} if isinstance(c, dict) and c.get("name") in gappy else c
            for c in record.meta.get("columns", [])
        ]
        return _as_file(record, str(target), {**record.meta, "columns": meta_columns})

    def _infinity_as_null(self, record: MediaLogged, full: _Full) -> MediaLogged:
        """±inf cells as empty ones, for a backend that writes them so anyway; the exact table beside."""
        document = read_document(record.path)
        counts: dict[str, int] = {}
        for row in document["data"]:
            for column, cell in row.items():
                if isinstance(cell, float) and math.isinf(cell):
                    row[column] = None
                    counts[column] = counts.get(column, 0) + 1
        if not counts:
            return record
        target = self._write_table(record, document, f"{record.sha256}-no-infinity.table.json")
        attached = self._full_artifact(*full)
        examples = [
            {"name": record.name, "step": record.step, "column": c, "cells": n, "full": attached}
            for c, n in counts.items()
        ]
        self._report.note("table_infinity_as_null", sum(counts.values()), examples)
        return _as_file(record, str(target), record.meta)

    def _cut_audio(self, record: MediaLogged, seconds: float, full: _Full) -> MediaLogged:
        rate, frames = record.meta.get("sample_rate"), record.meta.get("frames")
        if not isinstance(rate, int) or not isinstance(frames, int) or frames <= seconds * rate:
            return record
        keep = math.floor(seconds * rate)
        target = self._write(cut_wav(Path(record.path).read_bytes(), keep), f"{record.sha256}-{keep}f.wav")
        attached = self._full_artifact(*full)
        example = {
            "name": record.name,
            "step": record.step,
            "seconds": frames / rate,
            "sent_seconds": keep / rate,
            "full": attached,
        }
        self._report.note("audio_cut", 1, [example])
        return _as_file(record, str(target), {**record.meta, "frames": keep})

    def _full_artifact(self, record: MediaLogged, extra: list[Record]) -> str:
        """The stored file (``record``, before any change) sent once as an artifact where the backend
        takes them, ahead of the changed one in ``extra``; what the report names."""
        if not self._caps.artifacts:
            return f"in the local store only: {record.path}"
        for earlier in extra:
            if isinstance(earlier, ArtifactLogged) and earlier.sha256 == record.sha256:
                return earlier.name
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", record.name)[:80] or "media"
        name = f"runtel-media-{safe}-step{record.step}{''.join(Path(record.path).suffixes)}"
        artifact = self._artifact(
            ArtifactLogged(
                name=name,
                version=1,
                sha256=record.sha256,
                size=record.size,
                path=record.path,
                time=record.time,
                step=record.step,
                metadata={"media": record.name, "kind": record.kind, "reason": "over the backend's limit"},
            )
        )
        extra.append(artifact)
        return artifact.name

    def _write_table(self, record: MediaLogged, document: dict[str, Any], filename: str) -> Path:
        """A derived table document, with the files of its Image cells beside it (hard links where the
        disk allows), so its cells' paths mean what they meant in the run folder."""
        source_root, target_root = Path(record.path).resolve().parent.parent, self._scratch.parent
        for cell in (c for row in document["data"] for c in row.values()):
            if isinstance(cell, dict) and isinstance(cell.get("image"), str):
                for relative in (cell["image"], cell.get("preview")):
                    if isinstance(relative, str):
                        _link_inside(source_root, target_root, relative)
        data = json.dumps(document, ensure_ascii=False, allow_nan=True).encode("utf-8")
        return self._write(data, filename)

    def _write(self, data: bytes, filename: str) -> Path:
        target = self._scratch / filename
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(data)
            partial.replace(target)
        return target

    # ------------------------------------------------------------------ steps
    def _restep(self, record: MediaLogged) -> MediaLogged:
        """The step under the backend's rules, ``media/<name>`` a series; a gallery's items share it."""
        if not self._steps.active:
            return record
        series = f"media/{record.name}"
        shared = self._gallery_step.get(series)
        if record.index > 0 and shared is not None and shared[0] == record.step:
            step = shared[1]
        else:
            step = self._steps.fit_one(series, record.step)
            self._gallery_step[series] = (record.step, step)
        return record if step == record.step else dataclasses.replace(record, step=step)


def _as_file(record: MediaLogged, path: str, meta: dict[str, Any]) -> MediaLogged:
    """``record`` pointing at another file, with that file's digest and size."""
    data = Path(path).read_bytes()
    return dataclasses.replace(
        record, path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data), meta=meta
    )


def _preview_png(path: Path) -> bytes:
    """The 8-bit PNG of an exact image array, by the rule the store's own previews follow."""
    import numpy as np

    from runtel._media_encode import png, preview_pixels

    return png(preview_pixels(np.load(path, allow_pickle=False)))


def _link_inside(source_root: Path, target_root: Path, relative: str) -> None:
    """``source_root/relative`` at ``target_root/relative``; a path leaving either folder is refused."""
    source, target = (source_root / relative).resolve(), (target_root / relative).resolve()
    if not source.is_relative_to(source_root) or not target.is_relative_to(target_root.resolve()):
        raise RuntelError(f"a table's Image cell names {relative!r}, outside the run folder")
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def png_size(path: str) -> tuple[int, int]:
    """Width and height from a PNG's header, without decoding it."""
    with open(path, "rb") as file:
        head = file.read(24)
    if head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _open_image(path: str) -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError(
            "scaling an image down to a backend's limit needs Pillow: pip install runtel[media]"
        ) from exc
    with Image.open(path) as image:
        return image.copy()  # decoded now: closing the file frees what ``open`` read


def _png_bytes(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def cut_wav(data: bytes, frames: int) -> bytes:
    """The first ``frames`` frames of a RIFF/WAVE file, any sample format (PCM or float), other
    chunks kept; sizes in the headers rewritten to match."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    chunks: list[bytes] = []
    block_align: int | None = None
    position = 12
    while position + 8 <= len(data):
        tag, size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        body = data[position + 8 : position + 8 + size]
        if tag == b"fmt ":
            block_align = struct.unpack("<H", body[12:14])[0]
        elif tag == b"data":
            if not block_align:
                raise ValueError("WAVE data before its fmt chunk")
            body = body[: frames * block_align]
        chunks.append(tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b""))
        position += 8 + size + (size % 2)
    payload = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
