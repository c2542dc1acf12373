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

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor

from runtel.records import Record

StepRule = Literal["any", "non_decreasing", "strictly_increasing"]

#: Entry-point group through which third-party packages register exporters by name.
ENTRY_POINT_GROUP = "runtel.exporters"


class ExportResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


NonFinite = Literal["exact", "clamp", "drop"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can hold; the SDK's adaptation step (``runtel._adapt``) fits records to it.

    Step and time rules apply per metric series; ``run_step_rule`` applies to the steps of all
    series together in logging order (W&B's single step counter). ``non_finite_values``: NaN and
    ±inf kept (``exact``), ±inf replaced by ±max float (``clamp``), or refused (``drop``).
    ``key_pattern`` is a regular expression a valid metric or parameter key must match in full;
    ``max_param_length`` counts characters of the value's string form; ``artifact_name_pattern``
    is the full-match rule for artifact names (others get their odd characters replaced by ``-``).
    ``every_rank``: the exporter carries this process's own telemetry (OTLP, Prometheus), so in a
    distributed job every rank keeps it, where a record-stream backend gets one run: rank 0's.
    """

    step_rule: StepRule = "any"
    run_step_rule: StepRule = "any"
    time_rule: StepRule = "any"
    non_finite_values: NonFinite = "exact"
    value_dtype: Literal["float64", "float32"] = "float64"
    param_types: tuple[type, ...] = (bool, int, float, str, list, dict, type(None))
    non_finite_params: bool = True
    params_immutable: bool = False
    max_param_length: int | None = None
    max_key_length: int | None = None
    key_pattern: str | None = None
    max_histogram_bins: int | None = None
    artifact_name_pattern: str | None = None
    spans: bool = True
    artifacts: bool = True
    figures: bool = True
    histograms: bool = True
    every_rank: bool = False


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


@runtime_checkable
class TelemetryHooks(Protocol):
    """Optional: an exporter that also plugs into the run's own OpenTelemetry providers.

    ``runtel.init`` adds these span processors to the run's ``TracerProvider`` and these readers
    to its ``MeterProvider`` (OTLP, Prometheus): spans and every run metric then flow through
    OpenTelemetry's own pipeline, beside the record stream.
    """

    def span_processors(self) -> Sequence[SpanProcessor]: ...

    def metric_readers(self) -> Sequence[MetricReader]: ...
