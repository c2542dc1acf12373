"""Automatic plots of a run, drawn on one background thread from what the store holds.

The training thread only hands over how many points it has logged per metric (``request``); the
worker waits until the store has them (the run writes in the background), so a render shows at least
the steps logged when it was asked. Requests coalesce into one render, so the worker never falls
behind, and after each render it rests four times as long as the render took, so drawing takes at
most about a fifth of the wall time however often it is asked. ``close`` renders once more from the
finished run, without the rest, and waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from runtel.store.query import StoredRun
from runtel.tracking.visualizer import MetricVisualizer

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
    """Owns the render thread of one run; ``render_threads`` and ``failures`` say what it did."""

    def __init__(self, run_dir: Path, flush: Callable[[], object]) -> None:
        self._run_dir = run_dir
        self._flush = flush
        self._wake = threading.Condition()
        self._pending = False
        self._closing = False
        self.renders = 0
        self.failures = 0
        self.render_threads: set[int] = set()
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
                return

    def _render(self, closing: bool) -> None:
        """A failed render is logged and counted, never raised: plots must not stop training."""
        self.render_threads.add(threading.get_ident())
        try:
            if not closing:
                self._flush()  # on this thread: the store then holds every point logged so far
            run = StoredRun(self._run_dir)
            series = plotted_series(run)
            if series:
                MetricVisualizer.save_plots(series, self._run_dir / "plots", prefix=PREFIX)
            self.renders += 1
        except Exception:
            self.failures += 1
            logger.exception("runtel: automatic visualisation of %s failed; training goes on", self._run_dir)
