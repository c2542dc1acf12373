"""Append-only files whose last good length is known, so a failed write is undone before a retry.

The writer never re-sends bytes it already wrote and never leaves half a record behind: each
file remembers ``committed`` (its length after the last whole write); a write that fails part-way
is cut back to it, and if even that fails (a full disk can refuse a truncate on some file systems)
the next write cuts it back first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


class AppendFile:
    """One file written only by this process, from one thread, always at its committed length."""

    def __init__(self, path: Path, committed: int) -> None:
        self.path = path
        self.committed = committed
        self.unsynced = False
        self._fd: int | None = None
        self._dirty = False  # bytes past ``committed`` may be on disk
        self._position = -1  # the descriptor's offset, when known

    def append(self, data: bytes | memoryview, *, keep_open: bool = True) -> None:
        """Write all of ``data`` at the committed length, or raise ``OSError`` with nothing of it kept."""
        fd = self._open()
        try:
            if self._dirty:
                os.ftruncate(fd, self.committed)
                self._dirty = False
            if self._position != self.committed:
                os.lseek(fd, self.committed, os.SEEK_SET)
                self._position = self.committed
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(self.path)
            self._dirty = True
            self._position = -1
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.committed)
                self._dirty = False
            self.release()
            raise
        self.committed += written
        self._position = self.committed
        self.unsynced = True
        if not keep_open:
            self.release()

    def rollback(self, length: int) -> None:
        """Forget everything after ``length`` (a block whose companion write failed)."""
        self.committed = length
        self._dirty = True
        with contextlib.suppress(OSError):
            os.ftruncate(self._open(), length)
            self._dirty = False

    def sync(self) -> None:
        """fsync, if anything was written since the last one (a closed file is opened for it and closed)."""
        if self.unsynced:
            was_open = self.is_open
            try:
                os.fsync(self._open())
            finally:
                if not was_open:
                    self.release()
            self.unsynced = False

    def release(self) -> None:
        """Close the descriptor (reopened on the next write); the committed length is kept."""
        if self._fd is not None:
            fd, self._fd, self._position = self._fd, None, -1
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, _FLAGS, 0o644)
        return self._fd


def truncate_to(path: Path, unit: int) -> int:
    """Cut ``path`` to a whole number of ``unit``-byte records (a crash's torn tail); its new size."""
    size = path.stat().st_size
    whole = size - size % unit
    if whole != size:
        os.truncate(path, whole)
    return whole


def truncate_to_last_line(path: Path) -> int:
    """Cut ``path`` after its last newline, so a torn last line (ASCII or mid-character) is gone."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
    if end != size:
        os.truncate(path, end)
    return end
