"""The console tee's own process: reads the pipes standing in for descriptors 1 and 2 (one pipe for
both when they shared a destination), writes every chunk through to the real destination, then into
``output.log`` (bounded).

A process of its own, started by :mod:`runtel._console` as ``python -I -S <this file>``, so that what
the program printed last still reaches the terminal and the log when the program dies at once
(``SIGKILL``, a segfault after ``faulthandler``'s report, ``os._exit``): the pipes' contents outlive
the writer. Standard library only; it ignores the terminal's signals (Ctrl-C reaches the program,
whose output this process must go on carrying) and ends when every writer has closed the pipes.

Arguments: ``LOG MAX_BYTES CONTROL_FD REPORT_FD LINES STREAM:READ_FD:DEST_FD...``, ``STREAM`` one of
``stdout``, ``stderr`` or ``stdout+stderr`` (both descriptors behind one pipe). ``stop`` on the
control pipe (the run finished) drains what the pipes hold, closes the log and writes a report line;
output after it is passed through only. With ``LINES`` = 1 each complete line is also written to the
report pipe as ``[STREAM, text]`` (for OpenTelemetry log records).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from collections import deque

#: Start of every stderr line in ``output.log`` (stdout lines, and those of a merged
#: ``stdout+stderr`` stream, are stored as printed).
STDERR_MARK = b"[stderr] "
#: Seconds between rewrites of the rolling tail while output runs past the head.
TAIL_EVERY_S = 2.0
#: Longest wait at ``stop`` for the pipes to be read empty.
DRAIN_S = 1.0
_READ_SIZE = 65_536


class BoundedLog:
    """``output.log``: the head written as it comes, then a rolling tail rewritten after it."""

    def __init__(self, path: str, max_bytes: int) -> None:
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
        self._open_stream: str | None = None  # the stream whose unfinished line ends the log

    def add(self, stream: str, data: bytes) -> None:
        """Append ``data`` of ``stream``: lines kept whole across streams, stderr lines marked."""
        self.seen += len(data)
        out = bytearray()
        at_line_start = self._open_stream != stream
        if self._open_stream is not None and self._open_stream != stream:
            out += b"\n"  # the other stream's unfinished line ends here, so lines never mix
        if stream == "stderr":
            for piece in data.splitlines(keepends=True):
                if at_line_start:
                    out += STDERR_MARK
                out += piece
                at_line_start = piece.endswith(b"\n")
        else:
            out += data
        self._open_stream = None if data.endswith(b"\n") else stream
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
        if time.monotonic() - self._tail_written_at >= TAIL_EVERY_S:
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


class Tee:
    """Reads the pipes, writes through, logs until the log is closed, reports lines and the end."""

    def __init__(self, log: BoundedLog, report_fd: int, lines: bool) -> None:
        self._log: BoundedLog | None = log
        self._report_fd = report_fd
        self._lines = lines
        self._lock = threading.Lock()
        self._partial: dict[str, bytes] = {}
        self._busy: set[str] = set()

    def pump(self, stream: str, source: int, dest: int) -> None:
        while True:
            with contextlib.suppress(OSError):
                select.select([source], [], [])
            with self._lock:  # busy before the bytes leave the pipe: finalize never misses them
                self._busy.add(stream)
            try:
                data = os.read(source, _READ_SIZE)
            except OSError:  # a pty's master reads EIO once every writer closed it
                data = b""
            if not data:
                with self._lock:
                    self._busy.discard(stream)
                    if self._partial.get(stream) and self._log is not None:
                        self._tell(stream, b"\n")  # a last line without its newline is still a line
                return
            _write_all(dest, data)
            with self._lock:
                self._busy.discard(stream)
                if self._log is None:
                    continue
                try:
                    self._log.add(stream, data)
                except OSError as exc:  # a full disk stops the log, never the program's output
                    self._report({"error": f"cannot write output.log: {exc}"})
                    self._log = None
                    continue
                if self._lines:
                    self._tell(stream, data)

    def _tell(self, stream: str, data: bytes) -> None:
        pieces = (self._partial.get(stream, b"") + data).split(b"\n")
        self._partial[stream] = pieces.pop()
        for piece in pieces:
            self._report([stream, piece.decode("utf-8", "replace")])

    def _report(self, message: object) -> None:
        with contextlib.suppress(OSError):  # the program is gone: nobody to tell
            _write_all(self._report_fd, (json.dumps(message) + "\n").encode(), raising=True)

    def finalize(self, sources: list[int]) -> None:
        """Read what the pipes hold now (the program flushed before ``stop``), then close the log."""
        deadline = time.monotonic() + DRAIN_S
        while True:
            # Pipes empty first, then no reader busy (a reader marks itself busy before it reads):
            # in that order, no chunk can be between the pipe and the log.
            empty = all(_unread(fd) == 0 for fd in sources)
            with self._lock:
                if (empty and not self._busy) or time.monotonic() >= deadline:
                    log, self._log = self._log, None
                    if log is not None:
                        stored = log.close()
                        self._report({"report": {"seen": log.seen, "stored": stored, "cut": log.cut}})
                    return
            time.sleep(0.002)


def _unread(fd: int) -> int:
    """Bytes waiting in a pipe or pty (0 when the platform cannot tell: the wait then ends early)."""
    try:
        import fcntl
        import termios

        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
    except (ImportError, OSError):
        return 0


def _write_all(fd: int, data: bytes, *, raising: bool = False) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            if raising:
                raise
            return  # the terminal went away: the log still gets everything
        view = view[written:]


def main(argv: list[str]) -> int:
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGTSTP"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)
    log_path, max_bytes, control_fd, report_fd, lines, *pairs = argv
    tee = Tee(BoundedLog(log_path, int(max_bytes)), int(report_fd), lines == "1")
    sources: list[int] = []
    pumps = []
    for pair in pairs:
        stream, source, dest = pair.split(":")
        sources.append(int(source))
        pumps.append(threading.Thread(target=tee.pump, args=(stream, int(source), int(dest)), daemon=True))
    for pump in pumps:
        pump.start()
    control = os.fdopen(int(control_fd), "rb")
    if control.readline().strip() == b"stop":  # else the program died: log until the pipes close
        tee.finalize(sources)
    for pump in pumps:
        pump.join()
    tee.finalize(sources)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
