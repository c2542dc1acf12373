"""Console capture: file descriptors 1 and 2 tee'd into the run's ``output.log`` (docs/reproducibility.md).

Each descriptor is pointed at a pipe; a reader thread per pipe writes every chunk through to the
original descriptor first (so the terminal shows what it would have shown, as promptly), then to
the log. Python's ``print``, ``logging`` and C-level writes all go through the descriptors, so they
are captured alike, and ``sys.stdout``'s own buffering (line-buffered on a terminal) is untouched.
Subprocesses inherit the pipes and are captured too; a child made by ``os.fork`` gets its
descriptors back (it is not the run's process). The log holds both streams in arrival order, lines
of stderr marked with :data:`STDERR_MARK`, and is bounded: past ``max_bytes`` it keeps the head and
a rolling tail with a marker line counting what was left out between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtel import _pty
from runtel.config import DEFAULT_CONSOLE_MAX_BYTES

logger = logging.getLogger("runtel")

CONSOLE_FILE = "output.log"
#: Start of every stderr line in ``output.log`` (stdout lines are stored as printed).
STDERR_MARK = b"[stderr] "
#: How long ``stop`` waits for what is still in the pipes; a subprocess still holding them is then
#: only passed through.
_DRAIN_S = 1.0
#: Seconds between rewrites of the rolling tail while output runs past the head.
_TAIL_EVERY_S = 2.0
_READ_SIZE = 65_536
_STREAMS = {1: "stdout", 2: "stderr"}

#: Receives each complete line as it is captured: (stream name, text without the newline).
LineListener = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class ConsoleReport:
    """What the capture saw: bytes read from the program, stored in ``output.log``, and left out."""

    path: Path
    streams: tuple[str, ...]
    bytes_seen: int
    bytes_stored: int
    bytes_cut: int

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "streams": list(self.streams),
            "bytes_seen": self.bytes_seen,
            "bytes_stored": self.bytes_stored,
            "bytes_cut": self.bytes_cut,
        }


class _BoundedLog:
    """``output.log``: the head written as it comes, then a rolling tail rewritten after it."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - held for the capture's life
        self._head_end = self._file.tell()  # a resumed run's earlier output stays before ours
        self._head_left = max(0, max_bytes // 2 - self._head_end)
        self._tail_limit = max_bytes - max_bytes // 2
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._tail_dirty = False
        self._tail_written_at = 0.0
        self.seen = 0
        self.cut = 0
        self._open_stream: int | None = None  # the stream whose unfinished line ends the log

    def add(self, fd: int, data: bytes) -> None:
        """Append ``data`` of stream ``fd``: lines kept whole across streams, stderr lines marked."""
        self.seen += len(data)
        out = bytearray()
        at_line_start = self._open_stream != fd
        if self._open_stream is not None and self._open_stream != fd:
            out += b"\n"  # the other stream's unfinished line ends here, so lines never mix
        if fd == 2:
            for piece in data.splitlines(keepends=True):
                if at_line_start:
                    out += STDERR_MARK
                out += piece
                at_line_start = piece.endswith(b"\n")
        else:
            out += data
        self._open_stream = None if data.endswith(b"\n") else fd
        self._store(bytes(out))

    def _store(self, data: bytes) -> None:
        if self._head_left:
            head, data = data[: self._head_left], data[self._head_left :]
            self._file.write(head)
            self._head_left -= len(head)
            if not self._head_left:
                self._head_end = self._file.tell()
        if not data:
            return
        self._tail.append(data)
        self._tail_bytes += len(data)
        while self._tail_bytes > self._tail_limit:
            extra = self._tail_bytes - self._tail_limit
            first = self._tail[0]
            if len(first) <= extra:
                self._tail.popleft()
                self._tail_bytes -= len(first)
                self.cut += len(first)
            else:
                self._tail[0] = first[extra:]
                self._tail_bytes -= extra
                self.cut += extra
        self._tail_dirty = True
        if time.monotonic() - self._tail_written_at >= _TAIL_EVERY_S:
            self.write_tail()

    def write_tail(self) -> None:
        """Rewrite what follows the head: the marker (once bytes were left out) and the tail."""
        if not self._tail_dirty:
            return
        self._file.truncate(self._head_end)  # opened for appending: writes land at the new end
        if self.cut:
            self._file.write(
                f"\n[runtel: {self.cut} bytes of console output left out here "
                "(RUNTEL_CONSOLE_MAX_BYTES)]\n".encode()
            )
        self._file.write(b"".join(self._tail))
        self._tail_dirty = False
        self._tail_written_at = time.monotonic()

    def close(self) -> int:
        self.write_tail()
        size = self._file.tell()
        self._file.close()
        return size


class _Tee:
    """One descriptor pointed at a pipe (a pty when it was a terminal), and the thread reading it."""

    def __init__(
        self, fd: int, log: _BoundedLog, lock: threading.Lock, listeners: list[LineListener]
    ) -> None:
        self.fd = fd
        self.saved = os.dup(fd)  # the original destination (not inherited by subprocesses)
        terminal = _pty.open_like(fd)
        self.is_pty = terminal is not None
        read_end, write_end = terminal if terminal is not None else os.pipe()
        os.dup2(write_end, fd)  # inheritable: subprocesses write into the pipe too
        os.close(write_end)
        self.read_end = read_end
        self._pipe = _identity(fd)
        self._log = log
        self._lock = lock
        self._listeners = listeners
        self._partial = b""
        self.logging = True
        self.thread = threading.Thread(target=self._pump, name=f"runtel-console-{fd}", daemon=True)
        self.thread.start()

    def still_ours(self) -> bool:
        """Whether the descriptor still points at our pipe (nobody swapped it since)."""
        return _identity(self.fd) == self._pipe

    def restore(self) -> None:
        if self.still_ours():
            os.dup2(self.saved, self.fd)

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self.read_end, _READ_SIZE)
            except OSError:  # a pty's master reads EIO once every writer closed it
                data = b""
            if not data:  # every writer closed it: the run gave the descriptor back
                if self._partial and self.logging:
                    self._tell(b"\n")  # a last line without its newline is still a line
                return
            _write_all(self.saved, data)
            try:
                with self._lock:
                    if not self.logging:  # stopped, or a subprocess outlived the run: pass through
                        continue
                    self._log.add(self.fd, data)
                if self._listeners:
                    self._tell(data)
            except Exception:  # a full disk stops the log, never the program's output
                self.logging = False
                logger.exception("runtel: console capture cannot write %s; it stops", self._log.path)

    def _tell(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace")
            for listener in self._listeners:
                try:
                    listener(_STREAMS[self.fd], text)
                except Exception:  # a listener (OTLP) failing must not stop the capture
                    logger.exception("runtel: a console line listener failed; it is dropped")
                    self._listeners.remove(listener)
                    break

    def close(self) -> None:
        for fd in (self.read_end, self.saved):
            with contextlib.suppress(OSError):
                os.close(fd)


class ConsoleCapture:
    """Tees descriptors 1 and 2 into ``path`` from :meth:`start` to :meth:`stop` (one per process)."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_CONSOLE_MAX_BYTES) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._tees: list[_Tee] = []
        self._log: _BoundedLog | None = None
        self._lock = threading.Lock()
        self.listeners: list[LineListener] = []
        self._resize: _pty.ResizeForwarder | None = None
        self._owner_pid = os.getpid()

    def start(self) -> bool:
        """Begin teeing; False (logged at debug level) when no descriptor can be, or another run of this
        process captures the console already."""
        global _active
        with _active_lock:
            if _active is not None and _active() is not None:
                logger.info("runtel: another run of this process captures the console; this one does not")
                return False
            usable = [fd for fd in (1, 2) if _identity(fd) is not None]
            if not usable:
                logger.debug("runtel: descriptors 1 and 2 are closed; no console capture")
                return False
            _flush_python_streams()
            try:
                self._log = _BoundedLog(self.path, self._max_bytes)
                for fd in usable:
                    self._tees.append(_Tee(fd, self._log, self._lock, self.listeners))
                self._resize = _pty.ResizeForwarder([(t.saved, t.fd) for t in self._tees if t.is_pty])
            except OSError as exc:
                logger.warning("runtel: console capture unavailable (%s)", exc)
                self.stop()
                return False
            _active = weakref.ref(self)
            return True

    def stop(self) -> ConsoleReport | None:
        """Give the descriptors back, store what the pipes still hold, close ``output.log``.

        Safe to call twice; does nothing in a forked child (the fork hook restored it already).
        """
        global _active
        if self._log is None or os.getpid() != self._owner_pid:
            return None
        _flush_python_streams()
        if self._resize is not None:
            self._resize.close()
        for tee in self._tees:
            tee.restore()
        deadline = time.monotonic() + _DRAIN_S
        for tee in self._tees:
            tee.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for tee in self._tees:
                tee.logging = False
                if not tee.thread.is_alive():  # else a subprocess holds the pipe: keep passing it through
                    tee.close()
            log, self._log = self._log, None
            stored = log.close()
        with _active_lock:
            if _active is not None and _active() is self:
                _active = None
        return ConsoleReport(self.path, tuple(_STREAMS[t.fd] for t in self._tees), log.seen, stored, log.cut)

    def _detach_in_child(self) -> None:
        """In a forked child (not the run's process): descriptors back to where they pointed before."""
        if self._resize is not None:
            self._resize.close()
        for tee in self._tees:
            with contextlib.suppress(OSError):
                tee.restore()
            tee.close()
        self._tees = []
        self._log = None


_active: weakref.ref[ConsoleCapture] | None = None
_active_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _active, _active_lock
    _active_lock = threading.Lock()
    capture = _active() if _active is not None else None
    _active = None
    if capture is not None:
        capture._detach_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _flush_python_streams() -> None:
    """What ``print`` buffered goes out before the descriptor under it changes."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:  # the terminal went away: the log still gets everything
            return
        view = view[written:]
