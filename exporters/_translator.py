"""A base for exporters that translate a run record by record into a client library's calls."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from runtel.exporters.base import ExportResult
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MediaLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEdited,
    RunEnded,
    RunStarted,
    SpanEnded,
)

#: The method a subclass implements for each kind of record; heartbeats need no translation.
_METHODS: dict[type, str] = {
    RunStarted: "_start",
    ParamsLogged: "_log_params",
    MetricPoints: "_log_points",
    SpanEnded: "_log_span",
    ArtifactLogged: "_log_artifact",
    FigureLogged: "_log_figure",
    HistogramLogged: "_log_histogram",
    MediaLogged: "_log_media",
    RunEnded: "_end",
    RunEdited: "_edit",
}


class RecordTranslator:
    """``export`` calls ``_start``, ``_log_points``... for each record, in order, under one lock.

    The lock keeps ``export`` and a subclass's ``force_flush``/``shutdown`` (which may come from
    another thread at ``finish()``) from interleaving on the client's run object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def export(self, records: Sequence[Record]) -> ExportResult:
        with self._lock:
            for record in records:
                method = _METHODS.get(type(record))
                if method is not None:
                    getattr(self, method)(record)
        return ExportResult.SUCCESS

    def _edit(self, record: RunEdited) -> None:
        """Tags, note or name changed after the fact; a backend without them has nothing to do."""
