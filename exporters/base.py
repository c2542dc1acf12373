"""The exporter interface: three methods and a declaration of what the backend can hold.

Modelled on OpenTelemetry's span exporters: ``export`` gets a batch of records on a
background thread and returns a result; an exception or a hang is the dispatcher's
problem, never the training loop's. Exporters translate; they do not decide policy:
what a backend cannot hold is declared in :class:`Capabilities` and adapted in one
shared place in the SDK.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from runtel.records import Record

StepRule = Literal["any", "non_decreasing", "strictly_increasing"]

#: Entry-point group through which third-party packages register exporters by name.
ENTRY_POINT_GROUP = "runtel.exporters"


class ExportResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend accepts, read by the SDK's adaptation step."""

    step_rule: StepRule = "any"
    param_types: tuple[type, ...] = (bool, int, float, str, list, dict, type(None))
    max_param_length: int | None = None
    max_key_length: int | None = None
    key_pattern: str | None = None
    spans: bool = True
    artifacts: bool = True
    figures: bool = True
    histograms: bool = True


@runtime_checkable
class Exporter(Protocol):
    """A destination for a run's records.

    ``export`` is called from one worker thread per exporter, with records in the order
    they were logged; the first batch starts with ``RunStarted``, the last ends with
    ``RunEnded``.
    """

    name: str
    capabilities: Capabilities

    def export(self, records: Sequence[Record]) -> ExportResult: ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool: ...

    def shutdown(self) -> None: ...
