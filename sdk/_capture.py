"""What a run captures of its process by default: the environment (``runtel._repro``) and the console
(``runtel._console``), started by ``Run.__init__`` and completed by ``Run.finish`` before the run's
last records are written, so both are in the store (and exported) with the run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtel._console import CONSOLE_FILE, ConsoleCapture, LineListener
from runtel._repro import ReproCapture, ReproOptions, StoreFile
from runtel.config import Settings

logger = logging.getLogger("runtel")

CONSOLE_ARTIFACT = CONSOLE_FILE
CONSOLE_KIND = "console"


class ProcessCapture:
    """Starts the captures the settings ask for; :meth:`finish` ends them and stores their files."""

    def __init__(
        self,
        run_dir: Path,
        settings: Settings,
        store_file: StoreFile,
        *,
        on_line: LineListener | None = None,
        on_finish: Callable[[], None] | None = None,
        descriptors: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """``descriptors``: :func:`runtel._console.open_descriptors` taken before the run opened files."""
        self._store_file = store_file
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._done = False
        self._repro: ReproCapture | None = None
        if settings.capture_environment:
            options = ReproOptions(
                git=settings.capture_git,
                diff=settings.capture_diff,
                diff_max_bytes=settings.diff_max_bytes,
                packages=settings.capture_packages,
            )
            self._repro = ReproCapture(run_dir, options, self._store_while_open)
        self._console: ConsoleCapture | None = None
        if settings.console:
            console = ConsoleCapture(run_dir / CONSOLE_FILE, settings.console_max_bytes, descriptors)
            if on_line is not None:
                console.listeners.append(on_line)
            if console.start():
                self._console = console

    def _store_while_open(self, path: Path, name: str, kind: str, metadata: dict[str, Any]) -> None:
        with self._lock:
            if self._done:  # the capture outlived finish()'s wait: too late to be part of the run
                logger.warning("runtel: %s was captured after the run ended; not stored", name)
                return
            self._store_file(path, name, kind, metadata)

    def finish(self) -> None:
        """Wait for the environment capture, give the console back and store ``output.log``; never raises."""
        if self._repro is not None:
            self._repro.join()
        with self._lock:
            self._done = True
        report = None
        try:  # the run finishes whatever happens to its console
            report = self._console.stop() if self._console is not None else None
            if self._on_finish is not None:
                self._on_finish()
        except Exception:
            logger.exception("runtel: could not end the console capture cleanly")
        if report is not None and report.bytes_stored:
            try:
                self._store_file(report.path, CONSOLE_ARTIFACT, CONSOLE_KIND, report.as_dict())
            except Exception:  # the run's data matters more than its console
                logger.exception("runtel: could not store the console output %s", report.path)
            if report.bytes_cut:
                logger.warning(
                    "runtel: %d of %d bytes of console output were left out of %s (RUNTEL_CONSOLE_MAX_BYTES)",
                    report.bytes_cut,
                    report.bytes_seen,
                    report.path,
                )
