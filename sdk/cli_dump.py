"""``runtel dump RUN METRIC``: one series as CSV, TSV or JSON lines, for people and shell tools.

Every stored point, in logging order: ``step``, ``time`` (seconds since the epoch) and ``value``. Floats
are written with ``repr``, the shortest text that reads back as the same float, so nothing is rounded;
NaN and infinities are ``nan``, ``inf`` and ``-inf`` (in JSON lines as the strings ``"nan"``, ``"inf"``,
``"-inf"``, since JSON has no such numbers), which ``float()``, pandas and numpy read back as they were.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from runtel.cli_commands import open_run, open_store

#: Points formatted and written per batch: bounded memory for a series of any length.
_BATCH = 65_536
FORMATS = ("csv", "tsv", "jsonl")
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def register(commands: Any) -> None:
    """Add ``dump`` to ``commands`` (an argparse sub-parser set)."""
    dump = commands.add_parser("dump", help="print one metric's points as CSV, TSV or JSON lines")
    dump.add_argument("run", help="run id, 8+ character id prefix, folder or name")
    dump.add_argument("metric", help="metric name, e.g. train/loss")
    dump.add_argument("--format", choices=FORMATS, default="csv", help="csv (default), tsv or jsonl")
    dump.add_argument("--rank", type=int, default=0, help="rank of a distributed run (default 0)")
    dump.add_argument(
        "--base-dir", default=None, help="store folder (default: runtel_runs or RUNTEL_BASE_DIR)"
    )
    dump.set_defaults(handler=dump_series)


def dump_series(args: argparse.Namespace) -> int:
    run = open_run(open_store(args.base_dir), args.run)
    steps, times, values = run.history(args.metric, args.rank)
    write_series(sys.stdout, steps, times, values, args.format)
    return 0


def write_series(out: TextIO, steps: IntArray, times: FloatArray, values: FloatArray, form: str) -> None:
    """The points as ``form`` (one of :data:`FORMATS`) on ``out``, a header line first for CSV and TSV."""
    if form == "jsonl":
        lines = _lines(steps, times, values, _json_line)
    else:
        separator = "," if form == "csv" else "\t"
        out.write(f"step{separator}time{separator}value\n")
        lines = _lines(steps, times, values, lambda s, t, v: f"{s}{separator}{t!r}{separator}{v!r}\n")
    for batch in lines:
        out.write(batch)


def _lines(
    steps: IntArray, times: FloatArray, values: FloatArray, line: Callable[[int, float, float], str]
) -> Iterator[str]:
    """One text block per batch: only a batch of points is ever held as Python objects."""
    for start in range(0, len(steps), _BATCH):
        end = start + _BATCH
        yield "".join(
            map(line, steps[start:end].tolist(), times[start:end].tolist(), values[start:end].tolist())
        )


def _json_line(step: int, time: float, value: float) -> str:
    return f'{{"step": {step}, "time": {_json_number(time)}, "value": {_json_number(value)}}}\n'


def _json_number(value: float) -> str:
    return repr(value) if math.isfinite(value) else f'"{value!r}"'
