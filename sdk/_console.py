"""Console capture: file descriptors 1 and 2 tee'd into the run's ``output.log`` (docs/reproducibility.md).

Each descriptor is pointed at a pipe (a pty when it was a terminal, see :mod:`runtel._pty`); when
both lead to one place (``> f 2>&1``, ``2>&1 | tee``, one terminal) one pipe stands in for both, so
the kernel keeps the order of their writes, as it did before. The pipes are read by a small process
of its own (:mod:`runtel._console_helper`) that writes every chunk through to the
original destination first (so the terminal shows what it would have shown, as promptly), then to
the log. Python's ``print``, ``logging`` and C-level writes all go through the descriptors, so they
are captured alike, and ``sys.stdout``'s own buffering is untouched. Because the reader is another
process, what the program wrote last reaches the terminal and the log even when it is killed at
once, and no reader thread competes with training for the GIL. Subprocesses inherit the pipes and
are captured too; a child made by ``os.fork`` gets its descriptors back (it is not the run's process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtel import _pty
from runtel._console_helper import STDERR_MARK
from runtel.config import DEFAULT_CONSOLE_MAX_BYTES

logger = logging.getLogger("runtel")

CONSOLE_FILE = "output.log"
__all__ = ["CONSOLE_FILE", "MERGED_STREAM", "STDERR_MARK", "ConsoleCapture", "ConsoleReport", "LineListener"]
#: How long ``stop`` waits for the helper to report the log closed (it drains the pipes first).
_REPORT_WAIT_S = 5.0
_HELPER = str(Path(__file__).with_name("_console_helper.py"))
#: Longest wait before a fork for the helper to read what the parent wrote.
_FORK_WAIT_S = 0.1
_STREAMS = {1: "stdout", 2: "stderr"}
#: The stream name of descriptors 1 and 2 behind one pipe: its lines cannot be told apart.
MERGED_STREAM = "stdout+stderr"

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


@dataclass
class _Swap:
    """One descriptor pointed at a pipe: where it pointed before, and the pipe's identity."""

    fd: int
    saved: int
    is_pty: bool
    pipe: tuple[int, int] | None = None

    def still_ours(self) -> bool:
        """Whether the descriptor still points at our pipe (nobody re-pointed it since)."""
        return self.pipe is not None and _identity(self.fd) == self.pipe

    def restore(self) -> None:
        if self.still_ours():
            os.dup2(self.saved, self.fd)


class ConsoleCapture:
    """Tees descriptors 1 and 2 into ``path`` from :meth:`start` to :meth:`stop` (one per process)."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = DEFAULT_CONSOLE_MAX_BYTES,
        descriptors: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """``descriptors`` (from :func:`open_descriptors` before the run opened any file) are the ones
        to capture; by default those open now."""
        self.path = path
        self._descriptors = open_descriptors() if descriptors is None else descriptors
        self._max_bytes = max_bytes
        self.listeners: list[LineListener] = []
        self._swaps: list[_Swap] = []
        self._streams: tuple[str, ...] = ()
        self._helper: subprocess.Popen[bytes] | None = None
        self._control: int | None = None
        self._reports: threading.Thread | None = None
        self._report: dict[str, int] | None = None
        self._reported = threading.Event()
        self._resize: _pty.ResizeForwarder | None = None
        self._stopping = False
        self._helper_lost = False
        self._owner_pid = os.getpid()

    def start(self) -> bool:
        """Begin teeing; False (logged) when no descriptor can be, the helper cannot start, or another
        run of this process captures the console already."""
        global _active
        with _active_lock:
            if _active is not None and _active() is not None:
                logger.info("runtel: another run of this process captures the console; this one does not")
                return False
            # Still what they were: a closed 1 or 2 may since have been reused by a file of the run
            usable = [fd for fd, seen in self._descriptors.items() if _identity(fd) == seen]
            if not usable or os.name != "posix" or not _is_python(sys.executable):
                logger.info(
                    "runtel: no console capture here (descriptors closed, not POSIX, or %r is no Python "
                    "interpreter to run the capture's helper with)",
                    sys.executable,
                )
                return False
            _flush_python_streams()
            try:
                self._start(usable)
            except (OSError, subprocess.SubprocessError) as exc:
                logger.warning("runtel: console capture unavailable (%s)", exc)
                self._undo()
                return False
            _active = weakref.ref(self)
            return True

    def _start(self, usable: list[int]) -> None:
        ends: list[tuple[tuple[int, ...], int, int]] = []  # (descriptors, read end, write end)
        saved: dict[int, int] = {}
        for fds in _by_destination(usable):
            for fd in fds:
                saved[fd] = os.dup(fd)  # the original destination (not inherited by subprocesses)
            terminal = _pty.open_like(fds[0])
            self._swaps += [_Swap(fd, saved[fd], terminal is not None) for fd in fds]
            read_end, write_end = terminal if terminal is not None else os.pipe()
            ends.append((fds, read_end, write_end))
        self._streams = tuple(_stream_name(fds) for fds, _, _ in ends)
        control_read, self._control = os.pipe()
        report_read, report_write = os.pipe()
        helper_fds = [control_read, report_write, *(swap.saved for swap in self._swaps)]
        helper_fds += [read_end for _, read_end, _ in ends]
        # A merged stream goes out through descriptor 1's copy: both lead to the same place
        pairs = [f"{_stream_name(fds)}:{read_end}:{saved[fds[0]]}" for fds, read_end, _ in ends]
        try:
            self._helper = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    _HELPER,
                    str(self.path),
                    str(self._max_bytes),
                    str(control_read),
                    str(report_write),
                    "1" if self.listeners else "0",
                    *pairs,
                ],
                pass_fds=helper_fds,
                stdin=subprocess.DEVNULL,
                stdout=self._swaps[0].saved,
                stderr=self._swaps[-1].saved,
            )
        except BaseException:
            for fd in (report_read, *(write_end for _, _, write_end in ends)):
                os.close(fd)
            raise
        finally:
            for fd in (control_read, report_write, *(read_end for _, read_end, _ in ends)):
                os.close(fd)
        _helpers.append(self._helper)
        self._reports = threading.Thread(
            target=self._read_reports, args=(report_read,), name="runtel-console", daemon=True
        )
        self._reports.start()
        swaps = {swap.fd: swap for swap in self._swaps}
        for fds, _, write_end in ends:
            for fd in fds:
                os.dup2(write_end, fd)  # inheritable: subprocesses write into the pipe too
                swaps[fd].pipe = _identity(fd)
            os.close(write_end)
        terminals = [(saved[fds[0]], fds[0]) for fds, _, _ in ends if swaps[fds[0]].is_pty]
        self._resize = _pty.ResizeForwarder(terminals)

    def _read_reports(self, report_read: int) -> None:
        """Lines for the listeners, and the helper's final report; if the helper dies while the run
        is live, the descriptors go back at once so the program's writes do not fail."""
        with os.fdopen(report_read, "rb") as reports:
            for raw in reports:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(message, list) and len(message) == 2:
                    self._tell(str(message[0]), str(message[1]))
                elif isinstance(message, dict) and isinstance(message.get("report"), dict):
                    self._report = message["report"]
                    self._reported.set()
                elif isinstance(message, dict) and "error" in message:
                    logger.warning("runtel: console capture: %s", message["error"])
        if not self._stopping and os.getpid() == self._owner_pid:
            for swap in self._swaps:  # first: the warning below must reach a live descriptor
                with contextlib.suppress(OSError):
                    swap.restore()
            self._helper_lost = True
            logger.warning("runtel: the console capture's helper process ended; output is no longer captured")
        self._reported.set()

    def _tell(self, stream: str, text: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(stream, text)
            except Exception:  # a listener (OTLP) failing must not stop the capture
                logger.exception("runtel: a console line listener failed; it is dropped")
                self.listeners.remove(listener)

    def stop(self) -> ConsoleReport | None:
        """Give the descriptors back, let the helper log what the pipes still hold, close ``output.log``.

        Safe to call twice; does nothing in a forked child (the fork hook restored it already). A
        subprocess still holding the pipes after this keeps its output passed through, not logged.
        """
        global _active
        if self._helper is None or self._stopping or os.getpid() != self._owner_pid:
            return None
        self._stopping = True
        _flush_python_streams()
        if self._resize is not None:
            self._resize.close()
        for swap in self._swaps:
            swap.restore()
        if self._control is not None:
            with contextlib.suppress(OSError):
                os.write(self._control, b"stop\n")
        self._reported.wait(_REPORT_WAIT_S)
        self._undo()
        _helpers[:] = [helper for helper in _helpers if helper.poll() is None]  # reaps the ended ones
        with _active_lock:
            if _active is not None and _active() is self:
                _active = None
        report = self._report or {}
        if not report and not self._helper_lost:
            logger.warning(
                "runtel: the console capture did not report; %s may lack its last output", self.path
            )
        return ConsoleReport(
            self.path,
            self._streams,
            int(report.get("seen", 0)),
            int(report.get("stored", _size(self.path))),
            int(report.get("cut", 0)),
        )

    def _undo(self) -> None:
        """Close what this process holds of the capture (the helper ends once the pipes close)."""
        for swap in self._swaps:
            with contextlib.suppress(OSError):
                swap.restore()
            with contextlib.suppress(OSError):
                os.close(swap.saved)
        if self._control is not None:
            with contextlib.suppress(OSError):
                os.close(self._control)
            self._control = None

    def _wait_until_read(self, timeout: float) -> None:
        """Wait until the pipes hold nothing the helper has not read (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        while any(_unread(swap) for swap in self._swaps if swap.still_ours()):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.0005)

    def _detach_in_child(self) -> None:
        """In a forked child (not the run's process): descriptors back to where they pointed before."""
        if self._resize is not None:
            self._resize.close()
        self._stopping = True
        self._undo()
        self._swaps = []
        self._helper = None


_active: weakref.ref[ConsoleCapture] | None = None
#: Helpers still running (one may outlive its run, carrying a subprocess's output): kept referenced,
#: and reaped once ended.
_helpers: list[subprocess.Popen[bytes]] = []
_active_lock = threading.Lock()


def _before_fork() -> None:
    """Let the helper take what the parent wrote before a child starts writing to the terminal
    directly, so the child's first lines do not overtake the parent's last ones (bounded wait)."""
    capture = _active() if _active is not None else None
    if capture is not None:
        capture._wait_until_read(_FORK_WAIT_S)


def _after_fork_in_child() -> None:
    global _active, _active_lock
    _active_lock = threading.Lock()
    capture = _active() if _active is not None else None
    _active = None
    _helpers.clear()  # the parent's children, not this process's
    if capture is not None:
        capture._detach_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def open_descriptors() -> dict[int, tuple[int, int]]:
    """Descriptors 1 and 2 that are open, with their identity: taken before a run opens its files,
    since a closed 1 or 2 is the number the next ``open`` gets."""
    found = {fd: _identity(fd) for fd in (1, 2)}
    return {fd: seen for fd, seen in found.items() if seen is not None}


def _by_destination(usable: list[int]) -> list[tuple[int, ...]]:
    """The descriptors grouped by where their writes land: ``[(1, 2)]`` when one pipe may stand in
    for both, else one group each."""
    if len(usable) == 2 and same_destination(*usable):
        return [tuple(usable)]
    return [(fd,) for fd in usable]


def _stream_name(fds: tuple[int, ...]) -> str:
    return MERGED_STREAM if len(fds) > 1 else _STREAMS[fds[0]]


def same_destination(first: int, second: int) -> bool:
    """Whether writes to the two descriptors form one ordered stream, so that one pipe standing in
    for both keeps their order and their bytes: the same pipe, socket or device (a terminal, opened
    once or twice), or the same open file of a regular file (``2>&1``: one offset) or both appending
    to it. Two opens of one file without ``O_APPEND`` (``> f 2> f``) overwrite each other by their own
    offsets, which one pipe would not reproduce: they stay apart."""
    try:
        one, other = os.fstat(first), os.fstat(second)
    except OSError:
        return False
    if stat.S_ISCHR(one.st_mode) and stat.S_ISCHR(other.st_mode):
        return one.st_rdev == other.st_rdev
    if (one.st_dev, one.st_ino) != (other.st_dev, other.st_ino):
        return False
    return not stat.S_ISREG(one.st_mode) or _one_open_file(first, second)


def _one_open_file(first: int, second: int) -> bool:
    """Whether two descriptors of a regular file share its offset (one open file description, as
    ``dup`` makes) or both append. The status flags belong to the open file description: toggling
    ``O_NONBLOCK`` on one shows on the other exactly when they share it (regular files ignore the
    flag, so the probe changes nothing the program or a process sharing the file would notice)."""
    try:
        import fcntl

        flags, others = fcntl.fcntl(first, fcntl.F_GETFL), fcntl.fcntl(second, fcntl.F_GETFL)
        if flags & others & os.O_APPEND:
            return True
        if flags != others:
            return False
        fcntl.fcntl(first, fcntl.F_SETFL, flags ^ os.O_NONBLOCK)
        try:
            return bool(fcntl.fcntl(second, fcntl.F_GETFL) != others)
        finally:
            fcntl.fcntl(first, fcntl.F_SETFL, flags)
    except (ImportError, OSError):
        return False


def _is_python(executable: str) -> bool:
    """An embedding program (uWSGI, a frozen app) names itself in ``sys.executable``: never run that."""
    return os.path.basename(executable).lower().startswith(("python", "pypy"))


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _unread(swap: _Swap) -> int:
    """Bytes written to the descriptor that the helper has not read yet (0 when unknown)."""
    try:
        import fcntl
        import termios

        request = termios.TIOCOUTQ if swap.is_pty else termios.FIONREAD
        return int.from_bytes(fcntl.ioctl(swap.fd, request, b"\0\0\0\0"), sys.byteorder)
    except (ImportError, OSError):
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _flush_python_streams() -> None:
    """What ``print`` buffered goes out before the descriptor under it changes."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
