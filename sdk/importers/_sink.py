"""The one place where an imported run is written into the store, as the records a live run produces.

Every write of an import goes through :func:`write_run`, so that the store's writer can change under
it without touching the importers. The folder is marked ``import.state = "partial"`` before the first
record and ``"complete"`` after the last: an interrupted import leaves a run that the next import of
the same source replaces (see :func:`existing_import`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtel._order import logging_order
from runtel.errors import ArtifactError, ConfigError
from runtel.importers._source import Pending, SourceRun
from runtel.records import ArtifactLogged, FigureLogged, MetricPoints, Record, RunStarted, SpanEnded
from runtel.store import _layout
from runtel.store._jsonio import read_json, write_json_atomic
from runtel.store.artifacts import ArtifactStore
from runtel.store.writer import StoreWriter

BATCH_POINTS = 50_000
_UNSAFE_PART = re.compile(r"[^\w.\- ]+")

Progress = Callable[[int], None]


def existing_import(base_dir: Path, run: Pending) -> tuple[Path, dict[str, Any]] | None:
    """The folder (and its ``import`` metadata) this source run was imported into before, if any.

    Only a folder whose ``metadata.json`` names the same run id and source id counts, so a foreign
    folder that happens to share the id's first 8 characters is never touched.
    """
    run_id = run.run_id
    for folder in sorted(base_dir.glob(f"*_{run_id[:8]}")):
        metadata = read_json(folder / _layout.METADATA, default={})
        details = metadata.get("import") if isinstance(metadata, dict) else None
        if (
            isinstance(details, dict)
            and metadata.get("id") == run_id
            and details.get("source_id") == run.source_id
        ):
            return folder, details
    return None


def remove_import(folder: Path) -> None:
    """Delete an earlier (partial, outdated or ``--force``d) import of a source run."""
    shutil.rmtree(folder)


def write_run(base_dir: Path, run: SourceRun, progress: Progress | None = None) -> Path:
    """Write ``run`` as a new run folder under ``base_dir``; returns the folder."""
    run_id = run.run_id
    run_dir = base_dir / _layout.folder_name(run.name, run_id)
    if run_dir.exists():
        raise ConfigError(
            f"{str(run_dir)!r} already exists and is not an earlier import of {run.source_path!r}; "
            "move it away, then import again"
        )
    _layout.create_run_dir(run_dir)
    details: dict[str, Any] = {
        "state": "partial",
        "source": run.source,
        "source_id": run.source_id,
        "source_path": run.source_path,
        "fingerprint": run.fingerprint,
        "imported_at": time.time(),
        "source_metadata": run.source_metadata,
    }
    write_json_atomic(
        run_dir / _layout.METADATA, {"id": run_id, "imported_from": run.source, "import": details}
    )
    span_id = run_id[:16] if int(run_id[:16], 16) else "1" * 16
    writer = StoreWriter(run_dir)
    try:
        writer.start(_started(run))
        for batch in _point_batches(run, np.uint64(int(span_id, 16))):
            writer.write([batch])
            if progress is not None:
                progress(len(batch))
        events: list[Record] = [*run.histograms, *_figures(run, run_dir), *_artifacts(run, run_dir)]
        events.sort(key=_event_time)
        events.append(_run_span(run, span_id))
        writer.write(events)
        writer.write([writer.run_ended(run.status, run.error, run.end_time)])
    finally:
        writer.close({})  # StoreWriteError when something did not reach the disk
    _add_to_summary(
        run_dir,
        {
            "import": {"source": run.source, "status": "ok", "adaptations": run.report.as_dict()},
            **({"source_summary": run.source_summary} if run.source_summary else {}),
        },
    )
    metadata = read_json(run_dir / _layout.METADATA, default={})
    metadata.update(
        {
            "imported_from": run.source,
            "import": {**details, "state": "complete"},
            "notes": run.notes,
            "host": run.host,
            "pid": None,
            "process_start_time": None,
            "git_commit": run.source_metadata.get("git_commit"),
            "heartbeat": run.end_time,
        }
    )
    write_json_atomic(run_dir / _layout.METADATA, metadata)
    return run_dir


def _add_to_summary(run_dir: Path, items: dict[str, Any]) -> None:
    """The import's report beside the run's summary; kept out of the records, so a replay sends what a
    live run would have sent."""
    summary = read_json(run_dir / _layout.SUMMARY, default={})
    summary.update(items)
    write_json_atomic(run_dir / _layout.SUMMARY, summary)


def _started(run: SourceRun) -> RunStarted:
    resource = {"process.pid": os.getpid(), "runtel.imported_from": run.source}
    if run.host:
        resource["host.name"] = run.host
    return RunStarted(
        run_id=run.run_id,
        name=run.name,
        project=run.project,
        start_time=run.start_time,
        config=run.config,
        tags=run.tags,
        resource=resource,
    )


def _point_batches(run: SourceRun, span_id: np.uint64) -> list[MetricPoints]:
    """All series as batches in logging order (:func:`runtel._order.logging_order`), as a live run's
    flushes are."""
    names = tuple(run.metrics)
    if not names:
        return []
    columns = list(run.metrics.values())
    times = np.concatenate([c.times for c in columns])
    grouped = np.repeat(np.arange(len(names), dtype=np.int32), [c.values.size for c in columns])
    order = logging_order(times, grouped)
    index = grouped[order]
    steps = np.concatenate([c.steps for c in columns])[order]
    values = np.concatenate([c.values for c in columns])[order]
    times = times[order]
    spans = np.full(index.size, span_id, dtype=np.uint64)
    return [
        MetricPoints(
            names,
            index[start : start + BATCH_POINTS],
            steps[start : start + BATCH_POINTS],
            times[start : start + BATCH_POINTS],
            values[start : start + BATCH_POINTS],
            spans[start : start + BATCH_POINTS],
        )
        for start in range(0, index.size, BATCH_POINTS)
    ]


def _figures(run: SourceRun, run_dir: Path) -> list[FigureLogged]:
    """Each image as ``plots/<name>_step<N>.<suffix>``, as ``Run.log_figure`` lays them out."""
    figures = []
    for image in run.images:
        parts = [_UNSAFE_PART.sub("-", part) for part in image.name.split("/") if part not in ("", ".", "..")]
        parts = [part for part in parts if part.strip("-. ")] or ["image"]
        target = run_dir.joinpath("plots", *parts[:-1], f"{parts[-1]}_step{image.step}.{image.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.data)
        figures.append(FigureLogged(name=image.name, path=str(target), step=image.step, time=image.time))
    return figures


def _artifacts(run: SourceRun, run_dir: Path) -> list[ArtifactLogged]:
    store = ArtifactStore(run_dir)
    logged = []
    for item in run.files:
        try:
            stored = store.add(item.path, item.name, step=item.step, kind=item.kind, metadata=item.metadata)
        except ArtifactError as exc:  # an unsafe name or an unreadable file: the rest of the run still comes
            run.report.add("artifact_skipped", 1, {"name": item.name, "why": str(exc)})
            continue
        logged.append(stored.logged(item.time))
    return logged


def _run_span(run: SourceRun, span_id: str) -> SpanEnded:
    return SpanEnded(
        name=f"run {run.name}",
        kind="run",
        trace_id=run.run_id,
        span_id=span_id,
        parent_span_id=None,
        start_time=run.start_time,
        end_time=run.end_time,
        attributes={"runtel.run.name": run.name, "runtel.imported_from": run.source},
        status="ok" if run.status == "completed" else "error",
    )


def _event_time(record: Record) -> float:
    return float(getattr(record, "time", 0.0))
