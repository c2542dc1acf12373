"""Exports a run to MLflow through ``MlflowClient``.

Only the explicit client is used, never ``mlflow.start_run``'s process-global active
run, so two runs (or two exporters) in one process cannot clash. ``mlflow`` is
imported when an exporter is constructed, not when this module is imported.

Layout of one runtel run in MLflow:

- run name = runtel name, tags ``runtel.run_id``, ``runtel.project``, ``runtel.tags``; edits after the fact
  (``RunEdited``) update ``runtel.tags``, the note ``mlflow.note.content`` and the run name;
- a sweep's runs (docs/sweeps.md): tags ``runtel.sweep.id``, ``.name``, ``.role``, ``.trial``; a trial also
  ``mlflow.parentRunId`` = the sweep's MLflow run, when that is already in the experiment;
- params: the run's config and every ``ParamsLogged``, as the adaptation step gives them (flat
  ``/`` keys, text values);
- metrics: every point with its step and its time in whole milliseconds; epoch spans as
  the ``runtel/epoch`` metric (value = epoch number, step = the run's step when the epoch ended);
- artifacts: ``<name>/v<version>/<file>``, models ``models/<name>/v<version>/<file>``,
  figures ``figures/<name>[/step_<n>]/<file>``, histograms ``histograms/<name>/step_<n>.json``;
- media: images through ``log_image(key=<name>, step=<n>)`` (MLflow 3's step images, under
  ``images/``; a gallery is several at one key and step); the captions of any kind in
  ``media/<name>/step_<n>/captions.json``; tables through ``log_table`` as
  ``media/<name>/step_<n>.json`` (Image cells as MLflow table images), text through ``log_text``
  as ``media/<name>/step_<n>.txt``, audio as ``media/<name>/step_<n>/<file>.wav``; a gallery's
  later items of those kinds come as ``<name>/<index>`` (the adaptation step's split); a second
  item logged under one key at one step by another call goes to ``step_<n>_2`` (images: another
  step image at that key and step);
- at the end: ``summary.json``, ``error.txt`` (if any), tag ``runtel.status``, and the run
  terminated with the mapped status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from runtel.errors import AlreadyExportedError, MissingExtraError, RuntelError
from runtel.exporters._media import ImageCell, read_table, read_text
from runtel.exporters.base import EPOCH_SERIES, Capabilities, ExportResult
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
    edited_tags,
)
from runtel.sweep import ID_ATTRIBUTE, ROLE_ATTRIBUTE, sweep_attributes

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

#: MLflow's rule for metric, param and tag keys on POSIX (``mlflow/utils/validation.py``:
#: ``validate_param_and_metric_name`` allows ``[/\w.\- :]``, and ``path_not_unique`` rejects names
#: that ``posixpath.normpath`` would change: empty, leading ``/`` or ``..``, ``//``, trailing ``/``,
#: ``.`` or ``..`` segments). Apply with ``re.fullmatch``. On a Windows tracking server ``:`` is
#: also refused.
KEY_PATTERN = r"(?!\.\.)(?!(?:.*/)?\.\.?(?:/|$))[\w.\- :]+(?:/[\w.\- :]+)*"

CAPABILITIES = Capabilities(
    step_rule="any",
    # MLflow's SQL stores keep NaN (an ``is_nan`` column) but store +/-inf as +/-max float64
    # (``SqlAlchemyStore.sanitize_metric_value``) and read that finite number back.
    non_finite_values="clamp",
    # Params are flat strings in MLflow: nested dicts are flattened with "/", scalars sent as
    # ``str(value)`` (as ``mlflow.log_params`` does), None, lists and empty dicts as JSON text.
    param_types=(bool, int, float, str),
    params_as_text=True,
    # A param, once logged, cannot change value ("Changing param values is not allowed").
    params_immutable=True,
    max_param_length=6000,  # MAX_PARAM_VAL_LENGTH, mlflow/utils/validation.py; longer is cut by MLflow.
    max_key_length=250,  # MAX_ENTITY_KEY_LENGTH (metric names, param and tag keys).
    key_pattern=KEY_PATTERN,
    time_resolution=0.001,  # metric timestamps are whole milliseconds (int64)
    media=("image", "table", "text", "audio"),
    exact_arrays=False,  # images as 8-bit PNG, audio as 16-bit WAV: the stored previews
    # Step images of one key and step are kept side by side (each file has its own uuid); a table,
    # text or clip is one artifact file per name and step.
    galleries=("image",),
    # log_table refuses an image column holding anything but images ("a mix of images and non-images").
    table_image_gaps=False,
    # log_table writes DataFrame.to_json: NaN and +/-inf cells become null (read back as NaN).
    table_infinity=False,
    # log_image keys allow only [A-Za-z0-9_-./ ] (and table files refuse quotes, commas, colons and
    # brackets); the path rules of KEY_PATTERN still apply, as a media name is an artifact folder.
    media_key_pattern=r"(?!\.\.)(?!(?:.*/)?\.\.?(?:/|$))[A-Za-z0-9_\-. ]+(?:/[A-Za-z0-9_\-. ]+)*",
)

# Two points of one metric with the same step,
# millisecond and value are one row (the metrics table's primary key).

#: ``log_batch`` limits (mlflow/utils/validation.py: MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH);
#: each chunk also stays under MAX_BATCH_LOG_REQUEST_SIZE (1 MB) for a REST server.
_METRICS_PER_CALL = 1000
_PARAMS_PER_CALL = 100

_STATUS = {"completed": "FINISHED", "failed": "FAILED", "crashed": "KILLED", "killed": "KILLED"}

_T = TypeVar("_T")


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pil_image(path: str) -> Any:
    """The PNG decoded by Pillow (MLflow re-encodes it as PNG: the same pixels)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.copy()


def _ms(seconds: float) -> int:
    """Unix seconds as MLflow's integer milliseconds, rounded to the nearest."""
    return round(seconds * 1000.0)


class MlflowExporter:
    """Writes each runtel run as one MLflow run.

    ``experiment_name`` defaults to the run's project. ``artifact_location`` is used only
    when the exporter creates the experiment. Exporting a run whose ``runtel.run_id`` tag
    already exists in the experiment raises :class:`RuntelError`; with ``force=True`` the
    earlier MLflow run(s) are soft-deleted (restorable with ``MlflowClient.restore_run``
    until ``mlflow gc``) and a fresh run is written.
    """

    name = "mlflow"
    capabilities = CAPABILITIES

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        *,
        force: bool = False,
        artifact_location: str | None = None,
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise MissingExtraError(
                "the MLflow exporter needs the mlflow package: pip install runtel[mlflow]"
            ) from exc
        self._client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        self._experiment_name = experiment_name
        self._artifact_location = artifact_location
        self._force = force
        self._runtel_id: str | None = None
        self._mlflow_id: str | None = None
        self._is_shutdown = False
        #: the captions of each gallery so far, by (name, step): index -> caption
        self._captions: dict[tuple[str, int], dict[int, str]] = {}
        #: media items delivered, as (name, step, index, sha256, time): unique to a record, so a retried
        #: batch skips them but a second item logged under one key at one step is still sent
        self._delivered: set[tuple[str, int, int, str, float]] = set()
        #: the distinct items seen at each (name, step, index), in order: the n-th gets folder suffix _n
        self._slots: dict[tuple[str, int, int], list[tuple[str, int, int, str, float]]] = {}

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run written for the current runtel run (``None`` before ``RunStarted``)."""
        return self._mlflow_id

    def export(self, records: Sequence[Record]) -> ExportResult:
        """Write a batch; metrics and params of the batch go out in ``log_batch`` chunks.

        Safe to call again with the same batch after a failure: MLflow ignores a metric point
        it already holds and a param logged again with the same value.
        """
        if self._is_shutdown:
            return ExportResult.FAILURE
        metrics: list[Metric] = []
        params: dict[str, str] = {}
        for record in records:
            if isinstance(record, MetricPoints):
                metrics.extend(self._metrics(record))
            elif isinstance(record, ParamsLogged):
                params.update(record.params)
            elif isinstance(record, SpanEnded):
                if record.kind == "epoch":
                    metrics.append(self._epoch_metric(record))
            elif isinstance(record, RunStarted):
                self._start(record)
                params.update(record.config)
            elif isinstance(record, RunEnded):
                self._log_batch(metrics, params)
                metrics, params = [], {}
                self._end(record)
            elif isinstance(record, ArtifactLogged):
                self._artifact(record)
            elif isinstance(record, FigureLogged):
                path = f"figures/{record.name}" + (f"/step_{record.step}" if record.step is not None else "")
                self._client.log_artifact(self._run(), record.path, path)
            elif isinstance(record, HistogramLogged):
                self._histogram(record)
            elif isinstance(record, MediaLogged):
                self._media(record)
            elif isinstance(record, RunEdited):
                self._edit(record)
        self._log_batch(metrics, params)
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every call to MLflow is synchronous, so nothing is ever pending here."""
        return True

    def shutdown(self) -> None:
        self._is_shutdown = True

    def _run(self) -> str:
        if self._mlflow_id is None:
            raise RuntelError("the MLflow exporter got a record before RunStarted; records must start a run")
        return self._mlflow_id

    def _start(self, record: RunStarted) -> None:
        if record.run_id == self._runtel_id:
            return  # The same batch again after a failure: the MLflow run already exists.
        self._captions, self._delivered, self._slots = {}, set(), {}
        experiment_id = self._experiment_id(self._experiment_name or record.project)
        existing = self._client.search_runs(
            [experiment_id], filter_string=f"tags.`runtel.run_id` = '{record.run_id}'"
        )
        if existing and record.resumed:  # continue the MLflow run the interrupted session started
            self._runtel_id, self._mlflow_id = record.run_id, existing[0].info.run_id
            self._client.update_run(self._mlflow_id, status="RUNNING")
            return
        if existing and not self._force:
            ids = ", ".join(run.info.run_id for run in existing)
            raise AlreadyExportedError(
                f"run {record.run_id} was already exported to MLflow experiment {experiment_id} "
                f"(MLflow run {ids})",
                remedy="pass MlflowExporter(..., force=True) to replace it",
            )
        for run in existing:
            self._client.delete_run(run.info.run_id)
        run = self._client.create_run(
            experiment_id,
            start_time=_ms(record.start_time),
            run_name=record.name,
            tags={
                "runtel.run_id": record.run_id,
                "runtel.project": record.project,
                "runtel.tags": json.dumps(list(record.tags)),
                **self._sweep_tags(experiment_id, record.resource),
            },
        )
        self._runtel_id = record.run_id
        self._mlflow_id = run.info.run_id

    def _sweep_tags(self, experiment_id: str, resource: dict[str, Any]) -> dict[str, str]:
        """A sweep's ``runtel.sweep.*`` tags; a trial also gets ``mlflow.parentRunId``: the sweep's MLflow
        run, when that was exported to the experiment first (``runtel export --sweep`` does so)."""
        tags = sweep_attributes(resource)
        if tags.get(ROLE_ATTRIBUTE) == "trial":
            parents = self._client.search_runs(
                [experiment_id], filter_string=f"tags.`runtel.run_id` = '{tags[ID_ATTRIBUTE]}'"
            )
            if parents:
                tags["mlflow.parentRunId"] = parents[0].info.run_id
        return tags

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self._client.create_experiment(name, artifact_location=self._artifact_location)
            except MlflowException:  # Created meanwhile by another run: use that one.
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise RuntelError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
                "or pass another experiment_name"
            )
        return str(experiment.experiment_id)

    def _metrics(self, points: MetricPoints) -> list[Metric]:
        from mlflow.entities import Metric

        # the adaptation step rounded the times to whole ms; rint only absorbs t * 1000's float error
        stamps = np.rint(points.times * 1000.0).astype(np.int64)
        out: list[Metric] = []
        for name, positions in points.by_name().items():
            values = points.values[positions].tolist()
            steps = points.steps[positions].tolist()
            times = stamps[positions].tolist()
            out.extend(Metric(name, v, t, s) for v, t, s in zip(values, times, steps, strict=True))
        return out

    def _epoch_metric(self, span: SpanEnded) -> Metric:
        from mlflow.entities import Metric

        attributes = span.attributes
        return Metric(
            EPOCH_SERIES, float(attributes["epoch"]), _ms(span.end_time), int(attributes["runtel.step_end"])
        )

    def _log_batch(self, metrics: list[Metric], params: dict[str, str]) -> None:
        from mlflow.entities import Param

        if not metrics and not params:
            return
        run_id = self._run()
        param_list: list[Param] = [Param(key, value) for key, value in params.items()]
        for chunk in _chunks(param_list, _PARAMS_PER_CALL):
            self._client.log_batch(run_id, params=chunk)
        for metric_chunk in _chunks(metrics, _METRICS_PER_CALL):
            self._client.log_batch(run_id, metrics=metric_chunk)

    def _artifact(self, record: ArtifactLogged) -> None:
        if record.kind == "console" and os.path.isfile(record.path):
            with open(record.path, encoding="utf-8", errors="replace") as console:  # bounded at capture
                self._client.log_text(self._run(), console.read(), "output.log")
            return
        prefix = "models/" if record.kind == "model" else ""
        artifact_path = f"{prefix}{record.name}/v{record.version}"
        if os.path.isdir(record.path):
            self._client.log_artifacts(self._run(), record.path, artifact_path)
        else:
            self._client.log_artifact(self._run(), record.path, artifact_path)

    def _histogram(self, record: HistogramLogged) -> None:
        self._client.log_dict(
            self._run(), record.to_dict(), f"histograms/{record.name}/step_{record.step}.json"
        )

    def _media(self, record: MediaLogged) -> None:
        """Each item once: a batch retried after a failure skips what the failed attempt delivered
        (``log_image`` would add a second file, ``log_table`` append the rows again). A second item
        logged under one key at one step (another call) goes to ``step_<n>_2`` (then ``_3``...)."""
        run_id = self._run()
        item = (record.name, record.step, record.index, record.sha256, record.time)
        if item in self._delivered:
            return
        slots = self._slots.setdefault((record.name, record.step, record.index), [])
        if item not in slots:
            slots.append(item)
        slot = slots.index(item)
        folder = f"media/{record.name}/step_{record.step}" + (f"_{slot + 1}" if slot else "")
        if record.kind == "image":
            self._client.log_image(
                run_id, _pil_image(record.path), key=record.name, step=record.step, timestamp=_ms(record.time)
            )
            self._delivered.add(item)
        elif record.kind == "table":
            table = read_table(record)
            columns = {
                name: [
                    _pil_image(row[i].path) if isinstance(row[i], ImageCell) else row[i] for row in table.rows
                ]
                for i, name in enumerate(table.columns)
            }
            self._client.log_table(run_id, columns, f"{folder}.json")  # MLflow makes the DataFrame
        elif record.kind == "text":
            self._client.log_text(run_id, read_text(record), f"{folder}.txt")
        else:
            self._client.log_artifact(run_id, record.path, folder)
        self._delivered.add(item)
        if record.caption is not None:
            captions = self._captions.setdefault((folder, record.step), {})
            captions[record.index] = record.caption
            self._client.log_dict(
                run_id, {str(i): captions[i] for i in sorted(captions)}, f"{folder}/captions.json"
            )

    def _edit(self, record: RunEdited) -> None:
        """Tags into ``runtel.tags`` (read back from the run, so a resumed export edits what is there), the
        note as MLflow's own ``mlflow.note.content``, the name as the run name (``mlflow.runName``)."""
        run_id = self._run()
        if record.tags_added or record.tags_removed:
            stored = self._client.get_run(run_id).data.tags.get("runtel.tags", "[]")
            try:
                current = tuple(tag for tag in json.loads(stored) if isinstance(tag, str))
            except (ValueError, TypeError):
                current = ()
            self._client.set_tag(run_id, "runtel.tags", json.dumps(list(edited_tags(current, record))))
        if record.note is not None:
            self._client.set_tag(run_id, "mlflow.note.content", record.note)
        if record.name is not None:
            self._client.update_run(run_id, name=record.name)

    def _end(self, record: RunEnded) -> None:
        run_id = self._run()
        if record.summary:
            self._client.log_dict(run_id, record.summary, "summary.json")
        if record.error:
            self._client.log_text(run_id, record.error, "error.txt")
        self._client.set_tag(run_id, "runtel.status", record.status)
        self._client.set_terminated(run_id, status=_STATUS[record.status], end_time=_ms(record.end_time))
