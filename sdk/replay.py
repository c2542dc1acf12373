"""Replaying a stored run to any exporter, exactly as live export would have sent it.

The record stream is rebuilt from the run folder: events from ``events.jsonl`` and metric
points from the series files, merged in time order (ties keep the order in which series first
appeared, which is how one ``log`` call's points were ordered). It goes through the same
adaptation step as live export, batch by batch, on the caller's thread, so a refusal (e.g. the
run was already exported to that MLflow experiment) surfaces as an exception.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from runtel._adapt import Adapter
from runtel._order import logging_order
from runtel.errors import RuntelError, StoreCorruptError
from runtel.exporters.base import Exporter, ExportResult
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MediaLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEnded,
    RunStarted,
    SpanEnded,
)
from runtel.store import _layout
from runtel.store._events import read_events
from runtel.store._jsonio import write_json_atomic
from runtel.store._metrics import damaged_series, series_stats
from runtel.store._untrusted import relocated
from runtel.store.artifacts import ArtifactVersion
from runtel.store.edits import read_edits
from runtel.store.query import StoredRun, metrics_dir, read_summary, run_file

DEFAULT_BATCH_POINTS = 50_000

Progress = Callable[[int], None]


def records_of(
    run: StoredRun, batch_points: int = DEFAULT_BATCH_POINTS, notes: list[str] | None = None
) -> Iterator[Record]:
    """The run's records in logging order; a run that never ended gets ``RunEnded(crashed)``.

    Files the records name are taken from this run folder only: an artifact is sent only when its
    bytes match the SHA-256 recorded at logging time (:class:`~runtel.errors.ChecksumMismatchError`
    otherwise), a figure only from the folder's ``plots/``, a media file only from its ``media/`` and
    when its SHA-256 matches (:class:`~runtel.errors.StoreCorruptError` otherwise). What had to be left
    out (a torn last line of ``events.jsonl``, an artifact version replaced since) is appended to
    ``notes``.
    """
    notes = [] if notes is None else notes
    log = read_events(run_file(run.dir, _layout.EVENTS))
    if log.torn is not None:
        notes.append(log.torn)
    files = _Files(run, notes)
    names = tuple(run.metrics())
    _refuse_damaged_series(run, names)
    columns = [run.history(name) for name in names]
    sizes = [steps.size for steps, _, _ in columns]
    all_times = np.concatenate([np.empty(0), *[c[1] for c in columns]])
    all_index = np.repeat(np.arange(len(names), dtype=np.int32), sizes)
    order = logging_order(all_times, all_index)
    index = all_index[order]
    steps = np.concatenate([np.empty(0, dtype=np.int64), *[c[0] for c in columns]])[order]
    times = all_times[order]
    values = np.concatenate([np.empty(0), *[c[2] for c in columns]])[order]
    spans = np.concatenate([np.empty(0, dtype=np.uint64), *[run.span_ids(name) for name in names]])[order]

    ended: RunEnded | None = None
    events: list[tuple[float, int, Record]] = []
    for record in log.records:
        if isinstance(record, RunEnded):
            ended = record
        elif not isinstance(record, RunStarted):
            trusted = files.check(record)
            if trusted is not None:
                events.append((_event_time(trusted), 1, trusted))
    edits = read_edits(run.dir)  # tags, note, name changed after the fact: sent at their time, before the end
    notes.extend(edits.problems)
    edited = [(edit.time, 1, edit) for edit in edits.edits]
    events = list(heapq.merge(events, edited, key=lambda item: item[0]))  # each list's own order kept

    def point_batches() -> Iterator[tuple[float, int, Record]]:
        """Batches cut at every event's time, so an epoch or figure comes after exactly the points
        logged before it (at equal times, points first), as it did live."""
        cuts = np.searchsorted(times, [when for when, _, _ in events], side="right").tolist()
        bounds = sorted({0, index.size, *cuts, *range(0, index.size, batch_points)})
        for start, stop in itertools.pairwise(bounds):
            yield (
                float(times[start]),
                0,
                MetricPoints(
                    names,
                    index[start:stop],
                    steps[start:stop],
                    times[start:stop],
                    values[start:stop],
                    spans[start:stop],
                ),
            )

    started = next((r for r in log.records if isinstance(r, RunStarted)), None)
    if started is not None:
        yield started
    for _, _, record in heapq.merge(events, point_batches(), key=lambda item: (item[0], item[1])):
        yield record
    summary = {"metrics": series_stats(metrics_dir(run.dir))}
    if ended is None:
        ended = RunEnded(
            status="crashed",
            end_time=float(times[-1]) if times.size else time.time(),
            error="the run's process ended without finishing the run",
        )
    yield ended if ended.summary else dataclasses.replace(ended, summary=summary)


def export_run(
    run: StoredRun,
    exporter: Exporter,
    *,
    progress: Progress | None = None,
    batch_points: int = DEFAULT_BATCH_POINTS,
) -> dict[str, Any]:
    """Send ``run`` to ``exporter``; returns ``{"points": n, "seconds": s, "adaptations": {...}}``.

    What happened (exporter, time, points, adaptations with examples, or the error) is appended to
    the run's ``summary.json`` under ``replays``, as live export reports go under ``exporters``.
    """
    name = getattr(exporter, "name", type(exporter).__name__)
    if not exporter.capabilities.records:
        raise RuntelError(
            f"the {name} exporter sends a live run's OpenTelemetry telemetry and takes no records, "
            "so a stored run cannot be replayed to it; export to a record backend (wandb, mlflow, "
            "tensorboard, neptune) instead"
        )
    adapter = Adapter(name, exporter.capabilities, run.dir / "adapted" / f"replay-{name}")
    started = time.perf_counter()
    sent = 0
    report: dict[str, Any] = {"exporter": name, "time": time.time(), "status": "failed"}
    notes: list[str] = []
    try:
        for record in records_of(run, batch_points, notes):
            result = exporter.export(adapter.adapt([record]))
            if result is not ExportResult.SUCCESS:
                raise RuntimeError(f"exporter {name!r} reported FAILURE")
            if isinstance(record, MetricPoints):
                sent += len(record)
                if progress is not None:
                    progress(len(record))
        exporter.force_flush()
        report["status"] = "ok"
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        exporter.shutdown()
        report.update(
            points=sent, seconds=time.perf_counter() - started, adaptations=adapter.report(), problems=notes
        )
        _record_replay(run, report)
    return {key: report[key] for key in ("points", "seconds", "adaptations", "problems")}


def _refuse_damaged_series(run: StoredRun, names: tuple[str, ...]) -> None:
    """Garbled series bytes are never sent: every block is checked against its CRC first."""
    folder = metrics_dir(run.dir)
    damage = damaged_series(folder)
    for name in names:
        if name in damage:
            raise StoreCorruptError(
                folder, None, f"{damage[name]}; `runtel verify` lists every damaged series"
            )


class _Files:
    """Artifact and figure records pointed at files of this run folder, checked before they are sent."""

    def __init__(self, run: StoredRun, notes: list[str]) -> None:
        self._run = run
        self._notes = notes
        self._artifacts: dict[str, list[ArtifactVersion]] | None = None

    def check(self, record: Record) -> Record | None:
        if isinstance(record, ArtifactLogged):
            return self._artifact(record)
        if isinstance(record, FigureLogged):
            path = relocated(self._run.dir, record.path, "plots", self._run.dir / _layout.EVENTS, "path")
            return dataclasses.replace(record, path=str(path))
        if isinstance(record, MediaLogged):
            return self._media(record)
        return record

    def _media(self, record: MediaLogged) -> MediaLogged:
        """A media record with its files resolved inside this folder and their SHA-256 checked (a damaged
        file is a :class:`StoreCorruptError`: the export stops rather than send other bytes)."""
        from runtel.store.media import item_of, verify_item

        item = item_of(self._run.dir, record)
        verify_item(item)  # its file, its preview and a table's Image cells
        preview = None if item.preview is None else str(item.preview)
        return dataclasses.replace(record, path=str(item.path), preview=preview)

    def _artifact(self, record: ArtifactLogged) -> ArtifactLogged | None:
        """The stored version with the record's content, verified; None (noted) once it was replaced."""
        if self._artifacts is None:
            self._artifacts = self._run.artifacts()
        versions = self._artifacts.get(record.name, [])
        stored = next((item for item in versions if item.checksum == record.sha256), None)
        if stored is None:
            self._notes.append(
                f"artifact {record.name!r} v{record.version} (sha256 {record.sha256[:12]}) is no longer "
                "stored (replaced with version=False, or removed): not sent"
            )
            return None
        self._run.artifact(record.name, stored.version, verify=True)
        return dataclasses.replace(record, path=stored.path)


def _record_replay(run: StoredRun, report: dict[str, Any]) -> None:
    """Append ``report`` to ``summary.json``; a damaged summary is left as found (``runtel ls`` names it)."""
    try:
        summary = read_summary(run.dir)
    except StoreCorruptError:
        return
    summary.setdefault("replays", []).append(report)
    write_json_atomic(run.dir / _layout.SUMMARY, summary)


def _event_time(record: Record) -> float:
    if isinstance(record, SpanEnded):
        return record.end_time
    if isinstance(record, ParamsLogged | ArtifactLogged | FigureLogged | HistogramLogged | MediaLogged):
        return record.time
    return 0.0


__all__ = ["export_run", "records_of"]
