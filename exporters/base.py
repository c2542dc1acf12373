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

from runtel.records import MediaKind, Record

StepRule = Literal["any", "non_decreasing", "strictly_increasing"]

#: Entry-point group through which third-party packages register exporters by name.
ENTRY_POINT_GROUP = "runtel.exporters"


class ExportResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


NonFinite = Literal["exact", "clamp", "drop"]

#: Names the exporters add beside the user's own live under this prefix (``runtel/epoch``,
#: ``runtel/status``...); a user metric in it is renamed by the adaptation step, so none collide.
EXPORTER_NAMESPACE = "runtel/"
#: The series epochs reach a backend as: the epoch number at the step the epoch ended on.
EPOCH_SERIES = "runtel/epoch"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can hold; the SDK's adaptation step (``runtel._adapt``) fits records to it.

    An exporter declares these and translates what it is given; every change needed to fit is
    made and reported by the adaptation step, never by the exporter (see ``docs/exporters.md``).

    Steps: ``step_rule`` applies per metric series; ``run_step_rule`` to the steps of all series
    together in logging order (W&B's single step counter). ``time_rule`` applies per series.
    ``time_resolution``: the step, in seconds, in which the backend stores a point's time (MLflow:
    0.001, whole milliseconds); times are rounded to it, and the points whose time changed reported
    (``time_rounded``). None: times are kept as float64 seconds.
    ``non_finite_values``: NaN and ±inf kept (``exact``), ±inf replaced by ±max float (``clamp``),
    or refused (``drop``). ``value_dtype``: the precision the backend keeps values in.

    Parameters: ``param_types`` are the leaf types the backend holds; ``dict`` among them means it
    holds nesting, otherwise nested dicts are flattened with ``param_separator``. Other leaves
    (None, lists, empty dicts) are sent as JSON text; with ``params_as_text`` (a backend that stores
    every param as a string) scalars are sent as ``str(value)`` too. ``non_finite_params``: whether
    NaN and ±inf survive in params (otherwise sent as text ``nan``, ``inf``, ``-inf``).
    ``summary_fields``: the run's summary is stored as fields under the same rules as params (else
    as one JSON document, unchanged). ``max_param_length`` counts characters of the value as the
    backend stores it (``str`` of a scalar, the JSON text of anything else). ``key_pattern`` is a
    regular expression a metric, parameter or summary key must match in full (for a nesting
    backend: each top-level key); ``max_key_length`` its length in characters. ``key_tree``: ``/``
    in a key makes a path of namespaces, so one key cannot also be the namespace of another
    (Neptune: ``a`` and ``a/b``).

    Records: ``artifacts``, ``figures``, ``histograms``: whether the backend takes those records
    (others are left out and reported; the local store keeps them). ``records=False``: the exporter
    reads only the run's OpenTelemetry pipeline (OTLP, Prometheus) and is given no records at all.
    ``every_rank``: the exporter carries this process's own telemetry (OTLP, Prometheus), so in a
    distributed job every rank keeps it, where a record-stream backend gets one run: rank 0's.

    Media (``MediaLogged``): ``media`` lists the kinds the backend takes ("image", "table", "text",
    "audio"); the others are left out and reported (an exporter that handles none declares
    ``media=()``; like ``artifacts`` and ``figures``, the default is to take them). ``exact_arrays``:
    the backend takes the exact ``.npy`` array of a non-uint8 image or of non-PCM audio (the default,
    as values are exact by default); an 8-bit-only backend declares False and is sent the 8-bit PNG
    or 16-bit WAV preview stored beside it. ``max_image_side`` (pixels) and
    ``max_image_bytes`` (PNG size): a larger image is sent scaled down. ``galleries``: the kinds of
    which the backend holds several under one name at one step (a list logged at once); the items
    of another kind's gallery go under ``<name>/<index>``. ``max_gallery_items``: images of a
    gallery past it are left out. ``max_table_rows``, ``max_text_chars``, ``max_audio_seconds``: a
    table, text or clip over the limit is cut to it and the full file sent beside it as an artifact.
    ``table_images``: a table's Image cells are shown as images; otherwise every Image column is
    sent as text (``[image <file>] <caption>``). ``table_image_gaps``: an Image column may have
    empty cells; otherwise such a column is sent as text (each image's path in the run folder).
    ``table_infinity``: ±inf cells survive (otherwise they are sent empty, as the backend would
    store them, and the exact table beside as an artifact).
    Every change is reported; the local store keeps the original. A media record's step follows the
    step rules as a series of its own (``media/<name>``), the items of a gallery sharing one step.
    ``captions``: the kinds whose caption the backend keeps (others are sent without, reported).
    Media names follow ``media_key_pattern`` (``key_pattern`` when None) and ``max_key_length``.

    Tags (at start and in edits): one longer than ``max_tag_length`` characters is left out, reported.
    """

    step_rule: StepRule = "any"
    run_step_rule: StepRule = "any"
    time_rule: Literal["any", "non_decreasing"] = "any"
    time_resolution: float | None = None
    non_finite_values: NonFinite = "exact"
    value_dtype: Literal["float64", "float32"] = "float64"
    param_types: tuple[type, ...] = (bool, int, float, str, list, dict, type(None))
    param_separator: str = "/"
    params_as_text: bool = False
    non_finite_params: bool = True
    summary_fields: bool = False
    params_immutable: bool = False
    max_param_length: int | None = None
    max_key_length: int | None = None
    key_pattern: str | None = None
    key_tree: bool = False
    max_histogram_bins: int | None = None
    artifact_name_pattern: str | None = None
    artifacts: bool = True
    figures: bool = True
    histograms: bool = True
    records: bool = True
    every_rank: bool = False
    media: tuple[MediaKind, ...] = ("image", "table", "text", "audio")
    exact_arrays: bool = True
    max_image_side: int | None = None
    max_image_bytes: int | None = None
    galleries: tuple[MediaKind, ...] = ("image", "table", "text", "audio")
    max_gallery_items: int | None = None
    max_table_rows: int | None = None
    max_text_chars: int | None = None
    max_audio_seconds: float | None = None
    captions: tuple[MediaKind, ...] = ("image", "table", "text", "audio")
    table_images: bool = True
    table_image_gaps: bool = True
    table_infinity: bool = True
    media_key_pattern: str | None = None
    max_tag_length: int | None = None


@runtime_checkable
class Exporter(Protocol):
    """A destination for a run's records: the contract between the dispatcher and an exporter.

    Threads: every method is called from the exporter's own worker thread (one per exporter per
    run), never from the training thread and never concurrently with another method of the same
    exporter; the constructor runs on the caller's thread, before ``runtel.init`` returns. So an
    exporter needs no lock of its own unless it starts threads itself.

    Failure: a method may raise; the dispatcher logs it, retries ``export`` with back-off
    (``export_retries``) and then marks the exporter failed for the run. Training, the local store
    and the other exporters go on; the store keeps everything for ``runtel export``.
    """

    #: The name in ``summary.json``'s exporter report, logs and ``runtel.exporter.name``.
    name: str
    #: What the backend can hold; the SDK adapts records to it before ``export`` sees them.
    capabilities: Capabilities

    def export(self, records: Sequence[Record]) -> ExportResult:
        """Deliver ``records`` (already adapted to ``capabilities``), in the order they were logged.

        The caller may rely on: the first batch of a run starts with ``RunStarted`` and the last
        ends with ``RunEnded``; a batch that failed (``FAILURE`` or an exception) is given again,
        whole, to the same exporter object, so a retry must not duplicate what the failed attempt
        delivered. Return ``SUCCESS`` only once the backend holds the batch or has taken it over.
        """
        ...

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Make what ``export`` accepted durable in the backend within ``timeout_millis``.

        Called for ``run.flush(exporters=True)`` with what is left of that call's deadline, after
        every batch submitted before it was exported. Return False when it could not finish in
        time; never block much past the deadline.
        """
        ...

    def shutdown(self) -> None:
        """Release the backend's resources; called once, last, after the final batch (``RunEnded``).

        It also comes without ``RunEnded`` when a run was abandoned (the process is exiting, or the
        exporter was marked failed): finish the backend's run as crashed rather than leave it
        running. An exporter may declare ``shutdown(self, timeout_millis: int = 30_000)``: it is then
        given what is left of ``finish()``'s ``export_timeout``, as OpenTelemetry's processors pass
        the remaining deadline down; the dispatcher stops waiting for it at that deadline.
        """
        ...


@runtime_checkable
class TelemetryHooks(Protocol):
    """Optional: an exporter that also plugs into the run's own OpenTelemetry providers.

    ``runtel.init`` adds these span processors to the run's ``TracerProvider`` and these readers
    to its ``MeterProvider`` (OTLP, Prometheus): spans and every run metric then flow through
    OpenTelemetry's own pipeline, beside the record stream.
    """

    def span_processors(self) -> Sequence[SpanProcessor]: ...

    def metric_readers(self) -> Sequence[MetricReader]: ...
