"""Exporter health as live telemetry, as OpenTelemetry's own processors publish theirs.

Per exporter: queue depth, points delivered and undelivered, retries and a failed flag, as
observable instruments of the run's own ``MeterProvider`` (scope ``runtel.health``), so any reader
attached to the run (OTLP, Prometheus) sees them; and the same readings in ``exporters.live.json``
in the run folder, rewritten at every heartbeat, so ``runtel show`` and the UI see a live run's
exporters before ``summary.json`` exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

HEALTH_SCOPE = "runtel.health"
LIVE_FILE = "exporters.live.json"
#: The readings each exporter publishes, with the instrument that carries each.
FIELDS = ("queue_depth", "points_delivered", "points_undelivered", "retries", "failed")

Reading = Mapping[str, Any]  # {"name", "status", *FIELDS}


def register_instruments(
    meter: Meter, readings: Callable[[], Sequence[Reading]], labels: Mapping[str, str]
) -> None:
    """The five instruments on ``meter``; each collect reads ``readings()`` once per instrument."""

    def observe(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(int(reading[field]), {"runtel.exporter.name": str(reading["name"]), **labels})
                for reading in readings()
            ]

        return callback

    meter.create_observable_up_down_counter(
        "runtel.exporter.queue.size",
        [observe("queue_depth")],
        unit="{batch}",
        description="Record batches waiting in the exporter's queue.",
    )
    meter.create_observable_counter(
        "runtel.exporter.points.delivered",
        [observe("points_delivered")],
        unit="{point}",
        description="Metric points the exporter accepted.",
    )
    meter.create_observable_counter(
        "runtel.exporter.points.undelivered",
        [observe("points_undelivered")],
        unit="{point}",
        description="Metric points the exporter never got (failed, hung, gave up); the store keeps them.",
    )
    meter.create_observable_counter(
        "runtel.exporter.retries",
        [observe("retries")],
        unit="{retry}",
        description="Export attempts retried.",
    )
    meter.create_observable_gauge(
        "runtel.exporter.failed",
        [observe("failed")],
        unit="1",
        description="1 once the exporter is marked failed for this run.",
    )


def write_live(run_dir: Path, readings: Sequence[Reading], when: float) -> None:
    """``exporters.live.json``: the readings at ``when``, replaced atomically."""
    document = {
        "time": when,
        "exporters": {str(r["name"]): {k: r[k] for k in ("status", *FIELDS)} for r in readings},
    }
    target = run_dir / LIVE_FILE
    scratch = target.with_name(f".{LIVE_FILE}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(document), encoding="utf-8")
    os.replace(scratch, target)


def read_live(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The exporters of a run's live file, validated field by field; ``{}`` when absent or damaged."""
    try:
        document = json.loads((run_dir / LIVE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    exporters = document.get("exporters") if isinstance(document, dict) else None
    if not isinstance(exporters, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, item in exporters.items():
        if not isinstance(item, dict) or item.get("status") not in ("ok", "failed"):
            continue
        values = {field: item.get(field) for field in FIELDS}
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values.values()):
            out[str(name)] = {"status": item["status"], **values}
    return out
