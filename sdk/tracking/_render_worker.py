"""The process that draws a run's automatic plots, so that rendering never holds the training
process's GIL (matplotlib is pure Python for most of a render).

:class:`~runtel.tracking._autoviz.AutoVisualizer` starts it with the interpreter running training.
It reads one JSON-encoded run folder per line on stdin, draws that run's plots from the store into
``<run>/plots/auto_*.png`` and answers one line: ``ok <pid>`` or ``error <message>``. It exits at the
end of stdin, so it never outlives the process that started it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO


def render(run_dir: Path) -> None:
    from runtel.store.query import StoredRun
    from runtel.tracking._autoviz import PREFIX, plotted_series
    from runtel.tracking.visualizer import MetricVisualizer

    series = plotted_series(StoredRun(run_dir))
    if series:
        MetricVisualizer.save_plots(series, run_dir / "plots", prefix=PREFIX)


def serve(requests: TextIO, replies: TextIO) -> None:
    for line in requests:
        try:
            render(Path(json.loads(line)))
            reply = f"ok {os.getpid()}"
        except Exception as exc:  # reported to the training process, which logs and counts it
            reply = "error " + f"{type(exc).__name__}: {exc}".replace("\n", " ")
        replies.write(reply + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
