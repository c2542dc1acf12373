"""Media files of a run folder: content-addressed ``media/<sha256>.<ext>``, each written atomically.

The run's flush thread encodes what ``log`` queued (:class:`PendingMedia`) and writes it here before
the :class:`~runtel.records.MediaLogged` records go to the store and the exporters, so every record
names a file already on disk. Identical content is stored once. A file the disk refuses (full,
read-only) waits in memory, bounded, and is written at a later flush, its record sent then; what is
still refused at ``finish()``, or cannot be encoded at all, is counted as lost by the store writer
(``finish()`` then raises :class:`~runtel.errors.StoreWriteError`, as for points).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtel._media_buffers import give_back
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
#: Bytes of copies the disk refused that wait for it in memory; past them an item is lost (counted).
MAX_BACKLOG_BYTES = 64 << 20


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
        #: Items the disk refused, in logging order, with their copies: written by :meth:`retry`.
        self._backlog: deque[tuple[PendingMedia, int, Media]] = deque()
        self._backlog_bytes = 0
        self._refused: OSError | None = None

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
        """The records of ``pending`` whose files are on disk. An item the disk refuses waits in the
        backlog (behind any already waiting) for :meth:`retry`; one that cannot be encoded is lost."""
        try:
            records = []
            for index, item in enumerate(pending.items):
                if self._backlog:
                    self._keep(pending, index, item)
                    continue
                record = self._record(pending, index, item)
                if record is not None:
                    records.append(record)
            return records
        finally:
            with self._drained:
                self._queued -= pending.nbytes
                self._drained.notify_all()

    def retry(self) -> list[MediaLogged]:
        """Write what the disk refused before, in logging order, until it refuses again."""
        records = []
        while self._backlog:
            pending, index, item = self._backlog[0]
            self._backlog_bytes -= _share(pending)
            self._backlog.popleft()
            record = self._record(pending, index, item, retry=True)
            if record is None and self._backlog and self._backlog[0][2] is item:
                break  # refused again: it is back at the head
            if record is not None:
                records.append(record)
        return records

    def give_up(self) -> None:
        """At ``finish()``: what is still refused is counted as lost, with the disk's last error."""
        while self._backlog:
            pending, _, item = self._backlog.popleft()
            self._lose(pending, item, self._refused or OSError("the disk refused the file"))
        self._backlog_bytes = 0

    def _record(
        self, pending: PendingMedia, index: int, item: Media, *, retry: bool = False
    ) -> MediaLogged | None:
        from runtel._media_encode import encode  # with Pillow's, imported once media are logged

        try:
            encoded = encode(item, self._put)
            path, sha256 = self._put(encoded.data, encoded.ext)
            preview = None if encoded.preview is None else self._put(*encoded.preview)[0]
        except OSError as exc:
            self._refused = exc
            if retry:
                self._backlog_bytes += _share(pending)
                self._backlog.appendleft((pending, index, item))
            else:
                self._keep(pending, index, item)
            return None
        except Exception as exc:
            self._lose(pending, item, exc)
            return None
        _release(item)
        return MediaLogged(
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
            count=len(pending.items),
            preview=None if preview is None else str(self.run_dir / preview),
            meta=encoded.meta,
        )

    def _keep(self, pending: PendingMedia, index: int, item: Media) -> None:
        """Queue a refused item for :meth:`retry`; past ``MAX_BACKLOG_BYTES`` it is lost instead."""
        if self._backlog_bytes + _share(pending) > MAX_BACKLOG_BYTES:
            self._lose(pending, item, self._refused or OSError("the media backlog is full"))
            return
        if not self._backlog:
            logger.warning(
                "runtel: the disk refuses media files (%s); up to %d MiB wait in memory and are written "
                "when it can",
                self._refused,
                MAX_BACKLOG_BYTES >> 20,
            )
        self._backlog_bytes += _share(pending)
        self._backlog.append((pending, index, item))

    def _lose(self, pending: PendingMedia, item: Media, exc: Exception) -> None:
        _release(item)
        self._store.lose_media(f"{type(item).__name__} {pending.name!r} at step {pending.step}", exc)

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


def _share(pending: PendingMedia) -> int:
    """One item's part of what ``pending`` holds in memory."""
    return pending.nbytes // max(1, len(pending.items))


def _release(item: Media) -> None:
    """An encoded (or lost) item's pixel buffer goes back for reuse when only runtel held it."""
    if isinstance(item, Image) and item.owned and item.array is not None:
        give_back(item.array)
        item.array = None


__all__ = ["MEDIA_DIR", "MediaWriter", "PendingMedia"]
