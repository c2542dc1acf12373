"""Automatic plots of a run, drawn in a worker process from what the store holds.

The training thread only asks for a render (``request``). A background thread flushes the run, so
the store holds every point logged so far, and hands the run folder to a render process
(``_render_worker``), which reads the store and writes the PNGs: matplotlib then never takes the
training process's GIL. Requests coalesce into one render, so the worker never falls behind, and
after each render the thread rests four times as long as the render took, so drawing takes at most
about a fifth of a core however often it is asked. ``close`` renders once more from the finished
run, without the rest, waits for it and stops the process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtel.store.query import StoredRun

logger = logging.getLogger("runtel")

#: Series recorded by the system-metrics sampler; they are not the experiment's metrics.
SYSTEM_PREFIX = "system/"
PREFIX = "auto_"
_REST_FACTOR = 4.0


def plotted_series(
    run: StoredRun,
) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    """``{name: (steps, values)}`` of the run's own metrics (system series left out), read from disk."""
    series = {}
    for name in run.metrics():
        if name.startswith(SYSTEM_PREFIX):
            continue
        steps, _, values = run.history(name)
        if values.size:
            series[name] = (steps, values)
    return series


class AutoVisualizer:
    """Owns the render thread and process of one run; ``renders``, ``failures`` and ``render_pids``
    (the processes that drew) say what it did."""

    def __init__(self, run_dir: Path, flush: Callable[[], object]) -> None:
        self._run_dir = run_dir
        self._flush = flush
        self._wake = threading.Condition()
        self._pending = False
        self._closing = False
        self._process: subprocess.Popen[str] | None = None
        self.renders = 0
        self.failures = 0
        self.render_pids: set[int] = set()
        self._thread = threading.Thread(target=self._loop, name="runtel-autoviz", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a render of everything logged so far; returns at once (waiting requests merge)."""
        with self._wake:
            self._pending = True
            self._wake.notify()

    def close(self) -> None:
        """Render the complete run once more and stop the thread; returns when that render is written."""
        with self._wake:
            self._pending = self._closing = True
            self._wake.notify()
        self._thread.join()

    def _loop(self) -> None:
        self._start_process()  # at once, so the first request finds matplotlib imported
        not_before = 0.0
        while True:
            with self._wake:
                while not self._pending or (not self._closing and time.monotonic() < not_before):
                    self._wake.wait(None if not self._pending else not_before - time.monotonic())
                self._pending = False
                closing = self._closing
            started = time.monotonic()
            self._render(closing)
            not_before = time.monotonic() + _REST_FACTOR * (time.monotonic() - started)
            if closing:
                self._stop_process()
                return

    def _render(self, closing: bool) -> None:
        """A failed render is logged and counted, never raised: plots must not stop training."""
        try:
            if not closing:
                self._flush()  # on this thread: the store then holds every point logged so far
            reply = self._ask(json.dumps(str(self._run_dir)))
        except Exception as exc:
            reply = f"error {type(exc).__name__}: {exc}"
        if reply.startswith("ok "):
            self.renders += 1
            self.render_pids.add(int(reply[3:]))
            return
        self.failures += 1
        logger.error(
            "runtel: automatic visualisation of %s failed (%s); training goes on", self._run_dir, reply
        )

    def _ask(self, request: str) -> str:
        """One request to the render process and its reply; a process that died is started again."""
        if self._process is None or self._process.poll() is not None:
            self._start_process()
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(request + "\n")
        process.stdin.flush()
        reply = process.stdout.readline().strip()
        return reply or f"error the render process ended (exit code {process.wait()})"

    def _start_process(self) -> None:
        """The worker runs with this interpreter and this ``sys.path``, so it imports this runtel."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "runtel.tracking._render_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
