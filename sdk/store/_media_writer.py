"""Media files of a run folder: content-addressed ``media/<sha256>.<ext>``, each written atomically.

The run's flush thread encodes what ``log`` queued (:class:`PendingMedia`) and writes it here before
the :class:`~runtel.records.MediaLogged` records go to the store and the exporters, so every record
names a file already on disk. Identical content is stored once. A file the disk refuses is never
silently missing: its record is not sent, and the store writer counts it as lost (``finish()`` then
raises :class:`~runtel.errors.StoreWriteError`, as for points).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtel._media_buffers import give_back
from runtel._media_encode import Encoded, encode
from runtel.media import Image, Media
from runtel.records import MediaLogged

if TYPE_CHECKING:
    from runtel.store.writer import StoreWriter

logger = logging.getLogger("runtel")

MEDIA_DIR = "media"
#: Bytes of copied media ``log`` may have queued before a call waits for the flush to encode some.
MAX_QUEUED_BYTES = 256 << 20
#: The longest such a wait lasts: past it the call goes on (memory above the bound, never a drop).
MAX_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class PendingMedia:
    """What one ``log`` call queued under ``name``: the copied values, not yet encoded."""

    name: str
    step: int
    time: float
    span_id: int
    items: tuple[Media, ...]
    nbytes: int


class MediaWriter:
    """Encodes and writes the media of one run folder (called on the flush thread, one at a time)."""

    def __init__(self, run_dir: Path, store: StoreWriter) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / MEDIA_DIR
        self._store = store
        self._queued = 0
        self._drained = threading.Condition()
        #: How many ``log`` calls waited for the flush because ``MAX_QUEUED_BYTES`` were queued.
        self.waits = 0

    def reserve(self, nbytes: int, wake: Callable[[], None]) -> None:
        """Count ``nbytes`` as queued (training thread); past the bound, wake the flush and wait for it."""
        with self._drained:
            self._queued += nbytes
            if self._queued <= MAX_QUEUED_BYTES:
                return
            self.waits += 1
        wake()
        with self._drained:
            self._drained.wait_for(lambda: self._queued <= MAX_QUEUED_BYTES, MAX_WAIT_S)

    def write(self, pending: PendingMedia) -> list[MediaLogged]:
        """The records of ``pending``, each file on disk; an item that could not be written is left out
        and counted as lost by the store writer."""
        try:
            return self._write(pending)
        finally:
            with self._drained:
                self._queued -= pending.nbytes
                self._drained.notify_all()

    def _write(self, pending: PendingMedia) -> list[MediaLogged]:
        records = []
        count = len(pending.items)
        for index, item in enumerate(pending.items):
            try:
                encoded = encode(item, self._store_file)
                path, sha256 = self._store_file(encoded)
                preview = None
                if encoded.preview is not None:
                    data, ext = encoded.preview
                    preview = self._put(data, ext)[0]
            except Exception as exc:
                self._store.lose_media(f"{type(item).__name__} {pending.name!r} at step {pending.step}", exc)
                continue
            finally:
                if isinstance(item, Image) and item.owned and item.array is not None:
                    give_back(item.array)
                    item.array = None
            records.append(
                MediaLogged(
                    name=pending.name,
                    step=pending.step,
                    time=pending.time,
                    kind=encoded.kind,
                    path=str(self.run_dir / path),
                    sha256=sha256,
                    size=len(encoded.data),
                    span_id=format(pending.span_id, "016x"),
                    caption=encoded.caption,
                    index=index,
                    count=count,
                    preview=None if preview is None else str(self.run_dir / preview),
                    meta=encoded.meta,
                )
            )
        return records

    def _store_file(self, encoded: Encoded) -> tuple[str, str]:
        return self._put(encoded.data, encoded.ext)

    def _put(self, data: bytes, ext: str) -> tuple[str, str]:
        """``data`` as ``media/<sha256>.<ext>`` (kept when already there); its relative path and hash."""
        sha256 = hashlib.sha256(data).hexdigest()
        relative = f"{MEDIA_DIR}/{sha256}.{ext}"
        target = self.run_dir / relative
        try:
            if target.stat().st_size == len(data) and not target.is_symlink():
                return relative, sha256
        except FileNotFoundError:
            pass
        self.dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return relative, sha256


__all__ = ["MEDIA_DIR", "MediaWriter", "PendingMedia"]
