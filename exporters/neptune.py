"""Neptune 1.x exporter: replays runtel records into one Neptune run.

Neptune's SaaS closed in March 2026. This exporter targets ``mode="offline"`` (the run
is written under ``<data_directory>/offline/`` and can be sent later with
``neptune sync``) and self-hosted Neptune servers, reached through Neptune's own
settings (``project``, ``api_token`` or ``NEPTUNE_API_TOKEN``, the server named by
the token).

Layout of the run: ``parameters/<key>`` (config and params; ``/`` in a flattened key makes
Neptune namespaces), ``metrics/<name>`` (float series with runtel's steps and times),
``runtel/epoch`` (float series indexed by the run's step at each epoch's end),
``artifacts/<name>/v<N>`` and ``models/<name>/v<N>``, ``figures/<name>`` (image series when
stepped), ``histograms/<name>/step_<N>`` (JSON files), ``summary/<key>`` (per-metric count, min,
max, last), ``runtel/...`` (run id, status, error, times), ``sys/failed``; media: ``images/<name>``
(an image series with runtel's steps, the caption as each image's description), ``text/<name>``
(a string series), ``tables/<name>/step_<N>`` (an HTML file), ``audio/<name>/step_<N>`` (the WAV
file). A gallery's items come as ``<name>/<index>``, each a series of its own (the adaptation
step's split: one series holds one value per step). Params and summary
arrive adapted (flat keys, NaN and ±inf as text, which Neptune's float fields cannot hold).
Tags: the run's, plus ``sweep:<id>`` and ``sweep:<name>`` on a sweep's run and its trials.

Facts this translation relies on (neptune 1.14, checked against its source):

- NaN and ±inf in a float series are skipped by the client with a warning
  (``FloatSeries.is_unsupported_float_with_warn``); a non-finite float param is not
  assigned at all (``Float.assign``). Neither reaches the offline log.
- Series steps must be strictly increasing and timestamps non-decreasing per series;
  the client does not check (offline logs keep anything), the server rejects the
  offending points at sync ("X-coordinates (step) must be strictly increasing").
- Params accept bool, int, float, str (nested dicts become namespaces); lists, tuples
  and None are dropped with a ``NeptuneUnsupportedType`` warning. Strings longer than
  16384 characters are truncated (``String.MAX_VALUE_LENGTH``).
- A file series holds images only ("FileSeries supports only image files"), and an image over
  32 MiB is sent empty (``_LOGGED_IMAGE_SIZE_LIMIT_MB``); a string series value is cut at 1,000
  characters (``MAX_STRING_SERIES_VALUE_LENGTH``), both with only a warning: declared limits.
- ``custom_run_id`` (at most 36 characters) is the runtel run id: a self-hosted server
  resumes the run holding it, so a second export appends to the same run, whose series
  then reject every repeated step. The offline backend ignores ``custom_run_id``: each
  export is a new offline run; ``runtel/run_id`` tells them apart. So ``force`` (``--force``)
  changes nothing offline, and is refused online: delete the run in Neptune, then export.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

from runtel.errors import ConfigError, MissingExtraError, RuntelError
from runtel.exporters._media import html_table, read_table, read_text
from runtel.exporters._translator import RecordTranslator
from runtel.exporters.base import EPOCH_SERIES, Capabilities
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MediaLogged,
    MetricPoints,
    ParamsLogged,
    RunEdited,
    RunEnded,
    RunStarted,
    SpanEnded,
)
from runtel.sweep import ID_ATTRIBUTE, NAME_ATTRIBUTE, sweep_attributes

if TYPE_CHECKING:
    import neptune as neptune_module

CAPABILITIES = Capabilities(
    step_rule="strictly_increasing",
    # Per series, timestamps must not decrease (server-side, "Timestamp must be non-decreasing").
    time_rule="non_decreasing",
    # Float series and float params drop NaN and +/-inf (client-side, with a warning).
    non_finite_values="drop",
    non_finite_params=False,
    # Nested dicts are flattened: a "/" in a field path makes the same namespaces.
    param_types=(bool, int, float, str),
    max_param_length=16384,
    # The summary goes into float fields too, so it follows the params' rules.
    summary_fields=True,
    # A path is split on "/"; empty segments vanish, so "a//b" and "a/b/" become "a/b".
    key_pattern=r"^[^/]+(/[^/]+)*$",
    # A field cannot also be a namespace: "opt" and "opt/lr" cannot both hold a value.
    key_tree=True,
    media=("image", "table", "text", "audio"),
    exact_arrays=False,  # images as 8-bit PNG, audio as 16-bit WAV: the stored previews
    galleries=(),  # a series takes one value per step
    # Only an image series value has a description; string series and files have none.
    captions=("image",),
    max_image_bytes=32 * 1024 * 1024,
    max_text_chars=1000,
    table_images=False,  # a table is an HTML File of text cells: an Image cell can only be its path
)

#: ``NEPTUNE_DATA_DIRECTORY`` is read from the environment when a run opens its
#: storage; the lock keeps two exporters from opening runs under each other's setting.
_ENV_LOCK = threading.Lock()


def _import_neptune() -> Any:
    try:
        import neptune
    except ImportError as exc:
        raise MissingExtraError(
            "the Neptune exporter needs the neptune package (1.x): pip install runtel[neptune]"
        ) from exc
    return neptune


class NeptuneExporter(RecordTranslator):
    """Writes one runtel run as one Neptune run; the API token stays in memory."""

    name = "neptune"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        project: str | None = None,
        mode: str = "offline",
        api_token: str | None = None,
        data_directory: str | None = None,
        force: bool = False,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        if force and mode != "offline":
            raise ConfigError(
                f"force cannot replace a run on a Neptune server (mode={mode!r}): delete it in Neptune, "
                "then export again"
            )
        self._neptune = _import_neptune()
        self._project = project
        self._mode = mode
        self._api_token = api_token
        self._data_directory = data_directory
        self._init_kwargs = init_kwargs
        self._run: neptune_module.Run | None = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until Neptune has processed every operation queued so far."""
        with self._lock:
            if self._run is not None:
                self._run.wait()
        return True

    def shutdown(self) -> None:
        """Stop a run that never got its ``RunEnded`` as crashed, so it is not left running."""
        with self._lock:
            if self._run is not None:
                self._run["runtel/status"] = "crashed"
                self._run["sys/failed"] = True
                self._run.stop()
                self._run = None

    @property
    def run(self) -> neptune_module.Run | None:
        """The live ``neptune.Run`` between ``RunStarted`` and ``RunEnded``."""
        return self._run

    def _active(self) -> neptune_module.Run:
        if self._run is None:
            raise RuntelError("neptune exporter got a record before RunStarted or after RunEnded")
        return self._run

    def _start(self, record: RunStarted) -> None:
        if self._run is not None:
            raise RuntelError(f"neptune exporter got a second RunStarted ({record.run_id}) in one run")
        kwargs: dict[str, Any] = {
            "capture_stdout": False,
            "capture_stderr": False,
            "capture_hardware_metrics": False,
            "capture_traceback": False,
            "source_files": [],
            **self._init_kwargs,
        }
        if self._api_token is not None:
            kwargs["api_token"] = self._api_token
        with _ENV_LOCK:
            previous = os.environ.get("NEPTUNE_DATA_DIRECTORY")
            if self._data_directory is not None:
                os.environ["NEPTUNE_DATA_DIRECTORY"] = self._data_directory
            try:
                run = self._neptune.init_run(
                    project=self._project,
                    mode=self._mode,
                    custom_run_id=record.run_id,
                    name=record.name,
                    tags=[*record.tags, *_sweep_tags(record)],
                    **kwargs,
                )
            finally:
                if previous is None:
                    os.environ.pop("NEPTUNE_DATA_DIRECTORY", None)
                else:
                    os.environ["NEPTUNE_DATA_DIRECTORY"] = previous
        run["runtel/run_id"] = record.run_id
        run["runtel/project"] = record.project
        run["runtel/start_time"] = record.start_time
        for key, value in record.config.items():
            run[f"parameters/{key}"] = value
        self._run = run

    def _log_params(self, record: ParamsLogged) -> None:
        run = self._active()
        for key, value in record.params.items():
            run[f"parameters/{key}"] = value

    def _log_points(self, points: MetricPoints) -> None:
        """One ``extend`` per metric and batch: one operation with every point of the series."""
        run = self._active()
        for name, positions in points.by_name().items():
            run[f"metrics/{name}"].extend(
                points.values[positions].tolist(),
                steps=points.steps[positions].tolist(),
                timestamps=points.times[positions].tolist(),
            )

    def _log_span(self, span: SpanEnded) -> None:
        if span.kind != "epoch":
            return
        self._active()[EPOCH_SERIES].append(
            int(span.attributes["epoch"]),
            step=int(span.attributes["runtel.step_end"]),
            timestamp=span.end_time,
        )

    def _log_artifact(self, record: ArtifactLogged) -> None:
        """Files are referenced by path and read at sync: the runtel store keeps them in place."""
        namespace = "models" if record.kind == "model" else "artifacts"
        field = self._active()[f"{namespace}/{record.name}/v{record.version}"]
        if os.path.isdir(record.path):
            field["files"].upload_files(os.path.join(record.path, "**"))
        else:
            field["file"].upload(record.path)
        field["sha256"] = record.sha256
        field["size"] = record.size
        field["time"] = record.time

    def _log_figure(self, record: FigureLogged) -> None:
        run = self._active()
        image = self._neptune.types.File(record.path)
        if record.step is None:
            run[f"figures/{record.name}"].upload(image)
        else:
            run[f"figures/{record.name}"].append(image, step=record.step, timestamp=record.time)

    def _log_histogram(self, record: HistogramLogged) -> None:
        """Neptune has no histogram type: one JSON file per step, as a person would read it."""
        content = json.dumps(record.to_dict(), allow_nan=True)
        file = self._neptune.types.File.from_content(content, extension="json")
        self._active()[f"histograms/{record.name}/step_{record.step}"].upload(file)

    def _log_media(self, record: MediaLogged) -> None:
        run, types = self._active(), self._neptune.types
        if record.kind == "image":
            run[f"images/{record.name}"].append(
                types.File(record.path), step=record.step, timestamp=record.time, description=record.caption
            )
        elif record.kind == "text":
            run[f"text/{record.name}"].append(read_text(record), step=record.step, timestamp=record.time)
        elif record.kind == "table":
            page = types.File.from_content(html_table(read_table(record)), extension="html")
            run[f"tables/{record.name}/step_{record.step}"].upload(page)
        else:
            run[f"audio/{record.name}/step_{record.step}"].upload(types.File(record.path))

    def _edit(self, record: RunEdited) -> None:
        """Neptune's own fields: ``sys/tags`` (a string set: added and removed as given), ``sys/description``
        for the note and ``sys/name``."""
        run = self._active()
        if record.tags_added:
            run["sys/tags"].add(list(record.tags_added))
        if record.tags_removed:
            run["sys/tags"].remove(list(record.tags_removed))
        if record.note is not None:
            run["sys/description"] = record.note
        if record.name is not None:
            run["sys/name"] = record.name

    def _end(self, record: RunEnded) -> None:
        run = self._active()
        for key, value in record.summary.items():
            run[f"summary/{key}"] = value
        run["runtel/status"] = record.status
        run["runtel/end_time"] = record.end_time
        if record.error is not None:
            run["runtel/error"] = record.error
        run["sys/failed"] = record.status != "completed"
        run.stop()
        self._run = None


def _sweep_tags(record: RunStarted) -> list[str]:
    """A sweep's run and its trials carry ``sweep:<id>`` and ``sweep:<name>`` tags, so one tag filter
    in Neptune selects the family."""
    sweep = sweep_attributes(record.resource)
    return [f"sweep:{sweep[ID_ATTRIBUTE]}", f"sweep:{sweep[NAME_ATTRIBUTE]}"] if sweep else []
