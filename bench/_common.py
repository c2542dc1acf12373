"""Shared helpers for the runtel benchmarks: timing records, statistics, machine description, tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from importlib import metadata

#: Distribution names whose versions are printed with the results.
VERSIONED = (
    "runtel",
    "numpy",
    "opentelemetry-sdk",
    "tensorboardX",
    "protobuf",
    "wandb",
    "mlflow",
    "neptune",
    "trackio",
    "aim",
    "dvclive",
)


@dataclass
class Trial:
    """One timed loop: how many points and calls it logged, how long it took, and untimed extras (s)."""

    points: int
    calls: int
    loop_ns: int
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def us_per_point(self) -> float:
        """Microseconds per logged point."""
        return self.loop_ns / 1e3 / self.points

    @property
    def us_per_call(self) -> float:
        """Microseconds per call (one training step's logging)."""
        return self.loop_ns / 1e3 / self.calls


@dataclass
class Result:
    """All trials of one backend for one case, or why it was skipped."""

    backend: str
    case: str
    trials: list[Trial] = field(default_factory=list)
    skipped: str | None = None
    note: str = ""

    def median_point(self) -> float:
        """Median microseconds per point over the trials."""
        return statistics.median(t.us_per_point for t in self.trials)

    def median_call(self) -> float:
        """Median microseconds per call over the trials."""
        return statistics.median(t.us_per_call for t in self.trials)

    def median_extra(self, key: str) -> float | None:
        """Median of an untimed extra (seconds), or None when no trial recorded it."""
        vals = [t.extras[key] for t in self.trials if key in t.extras]
        return statistics.median(vals) if vals else None

    def points_label(self) -> str:
        """How many points each trial logged, e.g. ``100,000 + 4 x 20,000``."""
        counts = [t.points for t in self.trials]
        if not counts:
            return ""
        if len(set(counts)) == 1:
            return f"{len(counts)} x {counts[0]:,}"
        first, rest = counts[0], counts[1:]
        if len(set(rest)) == 1:
            return f"{first:,} + {len(rest)} x {rest[0]:,}"
        return " / ".join(f"{c:,}" for c in counts)


def dist_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_table() -> str:
    """Markdown table describing the machine and the library versions."""
    rows = [
        ("CPU", f"{cpu_model()} ({usable_cores()} usable cores, {os.cpu_count()} online)"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
    ]
    for name in VERSIONED:
        rows.append((name, dist_version(name) or "not installed"))
    return md_table(["", ""], [list(r) for r in rows])


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """Render a Markdown table (right-aligning cells that look numeric)."""

    def numeric(cell: str) -> bool:
        return bool(cell) and (cell[0].isdigit() or cell[0] in "<>~") and "install" not in cell

    align = [
        "---:" if i > 0 and rows and all(numeric(r[i]) or r[i] in ("", "-") for r in rows) else "---"
        for i in range(len(header))
    ]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fmt_us(x: float | None) -> str:
    """Format microseconds with sensible precision."""
    if x is None:
        return "-"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_s(x: float | None) -> str:
    """Format seconds with sensible precision."""
    if x is None:
        return "-"
    if x < 0.1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def log(msg: str) -> None:
    """Progress message on stderr (stdout carries only the tables)."""
    print(msg, file=sys.stderr, flush=True)
