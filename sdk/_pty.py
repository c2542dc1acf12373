"""A pseudo-terminal standing in for a terminal descriptor while the console is captured.

A pipe in place of a terminal would change what programs print: ``isatty()`` turns False (colours
and progress bars switch off) and the window size is unknown. When descriptor 1 or 2 is a terminal,
the capture points it at a pty instead, with the terminal's settings and size, and output
post-processing off (the real terminal still does its own, so bytes reach it as they would have).
POSIX only; elsewhere, or when no pty can be opened, the capture uses a pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


def open_like(fd: int) -> tuple[int, int] | None:
    """``(master, slave)`` of a new pty set up like terminal ``fd``; None when ``fd`` is no terminal."""
    if not os.isatty(fd):
        return None
    try:
        import termios

        master, slave = os.openpty()
    except (ImportError, OSError):
        return None
    with contextlib.suppress(termios.error, OSError):
        attributes = termios.tcgetattr(fd)
        attributes[1] &= ~termios.OPOST  # the output flags: no "\n" -> "\r\n" on the way to us
        termios.tcsetattr(slave, termios.TCSANOW, attributes)
    copy_size(fd, slave)
    return master, slave


def copy_size(source: int, target: int) -> None:
    """Give terminal ``target`` the window size of ``source`` (nothing when either is no terminal)."""
    try:
        import fcntl
        import termios

        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except (ImportError, OSError):
        return


class ResizeForwarder:
    """Follows the real terminal's size changes (``SIGWINCH``) into the ptys, while no one else handles
    the signal; installed from the main thread only, removed by :meth:`close` if still ours."""

    def __init__(self, pairs: list[tuple[int, int]]) -> None:
        self._pairs = pairs  # (real terminal, pty) descriptors
        self._installed = False
        winch = getattr(signal, "SIGWINCH", None)
        if winch is None or not pairs or threading.current_thread() is not threading.main_thread():
            return
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(winch) in (signal.SIG_DFL, signal.SIG_IGN, None):
                signal.signal(winch, self._forward)
                self._installed = True

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        for real, pty in self._pairs:
            copy_size(real, pty)

    def close(self) -> None:
        if not self._installed:
            return
        self._installed = False
        handler: Callable[..., Any] | int | None = signal.getsignal(signal.SIGWINCH)
        if handler == self._forward and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)
