"""Weights & Biases exporter: replays runtel records into one ``wandb.Run``.

Facts this translation relies on (wandb 0.31, checked against its source and its
offline transaction log):

- Steps are one counter per run, not per metric. ``run.log(..., step=s)`` with ``s``
  lower than the run's current step is dropped (wandb-core logs ``ignoring partial
  history record``; nothing reaches the user with ``WANDB_SILENT``). Equal steps merge
  into one history row, and a key logged twice at one step keeps the last value.
- ``_timestamp`` in the logged dict is kept as the row's time, so each row carries the
  runtel time of its points (the latest one when several metrics share a step).
  ``_runtime`` is always export wall time; the run's start time cannot be set.
- NaN and ±inf in history survive exactly (JSON ``NaN``/``Infinity``); floats round-trip
  bit-exact. In the config and in a nested summary value a NaN becomes ``null``.
- Config keys lose leading and trailing "-" ("-lr-" becomes "lr"); keys starting
  with "_" are kept but treated as wandb-internal. Re-logged params change the config
  with ``allow_val_change=True``; nested params are merged key by key.
- ``run.finish()`` returns before wandb-core closes the transaction log: its last
  (partial) 32 KiB block reaches the disk when the stream closes a moment later.
- A sweep's run and its trials share a W&B group named after the sweep (``job_type`` sweep or
  trial), unless ``group`` is given to the exporter.
- The run id is the runtel run id. Online, ``resume="never"`` makes the server refuse a
  second export of the same run. Offline, wandb would silently write a second folder
  (``offline-run-...-<id>-1``) that ``wandb sync`` merges into the same run, so this
  exporter refuses when ``<dir>/wandb`` already holds a complete export of that id (marked by
  a ``runtel-export.json`` written after ``run.finish()``); ``force=True`` deletes those
  folders first. A folder without the marker is an export that failed or was cut short: it is
  replaced without ``force``, so a failed export can simply be retried. An online run cannot be
  replaced from here (delete it in W&B).
- Media go into the history row of their step: ``wandb.Image``, ``wandb.Audio`` (each with its
  caption), text as ``wandb.Html`` (escaped, in ``<pre>``), a table as ``wandb.Table`` (Image cells
  as ``wandb.Image``). A gallery of images or texts is a list under one key; wandb keeps at most
  ``Image.MAX_ITEMS`` (108) images of one list and cuts a ``wandb.Table`` to ``Table.MAX_ROWS``
  (10,000) rows with only a log warning, so those are declared limits. wandb copies each file into the run's
  ``files/media/`` folder, and the row holds its path, sha256 and size.
- wandb-core is one service process per Python process, torn down by an ``atexit`` hook that
  wandb registers when it starts the service. The exporter starts it when it is built, before
  ``runtel.init`` (re)registers runtel's own exit hook, so runs left open at exit are finished
  and exported before wandb tears its service down, whatever the order the runs were opened in.
"""

from __future__ import annotations

import glob
import html
import json
import logging
import math
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np

from runtel.errors import AlreadyExportedError, MissingExtraError, RuntelError
from runtel.exporters._media import ImageCell, read_table, read_text
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
    edited_tags,
)
from runtel.sweep import NAME_ATTRIBUTE, ROLE_ATTRIBUTE, sweep_attributes

logger = logging.getLogger("runtel")

if TYPE_CHECKING:
    import wandb as wandb_module

CAPABILITIES = Capabilities(
    # Per series a (metric, step) pair is kept once (a second value overwrites the first), and
    # W&B has one step counter per run: a step below the current one is dropped with only a
    # debug-log warning ("ignoring partial history record").
    step_rule="strictly_increasing",
    run_step_rule="non_decreasing",
    param_types=(bool, int, float, str, list, dict, type(None)),
    # NaN in the config becomes null, and so does a NaN inside the summary's nested dicts: the
    # summary follows the config's rules.
    non_finite_params=False,
    summary_fields=True,
    # Top-level config keys lose leading/trailing "-" (wandb_config._sanitize) and keys
    # starting with "_" are wandb-internal (hidden from run.config.keys()).
    key_pattern=r"^(?![_-])(?!.*-$).+$",
    max_histogram_bins=512,  # wandb.Histogram raises above this.
    # The run.tags setter refuses a list holding a tag over 64 characters, and then sets none of them.
    max_tag_length=64,
    # wandb.Artifact names: alphanumerics, dashes, underscores and dots, at most 128 characters.
    artifact_name_pattern=r"[A-Za-z0-9_.\-]{1,128}",
    media=("image", "table", "text", "audio"),
    exact_arrays=False,  # images as 8-bit PNG, audio as 16-bit WAV: the stored previews
    # A list of Images or Html is one history value; a list of Tables is not, and a list of Audio
    # needs the soundfile package (wandb.Audio.seq_to_json requires it even for files).
    galleries=("image", "text"),
    # wandb.Html and wandb.Table take no caption.
    captions=("image", "audio"),
    max_gallery_items=108,  # wandb.Image.MAX_ITEMS: a longer list is cut with a log warning.
    max_table_rows=10_000,  # wandb.Table.MAX_ROWS: a longer table is cut with a log warning.
)

#: Written into an offline run's folder once its export is complete (see the module docstring).
COMPLETE_MARKER = "runtel-export.json"

#: W&B knows only an exit code; the exact runtel status also goes to the summary.
EXIT_CODES: dict[str, int] = {"completed": 0, "running": 0, "failed": 1, "crashed": 1, "killed": 143}


#: runtel's captured files (kind, artifact name) as the run files W&B's own capture writes.
RUN_FILES = {
    ("console", "output.log"): "output.log",
    ("code", "diff.patch"): "diff.patch",
    ("environment", "requirements.txt"): "requirements.txt",
}


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise MissingExtraError(
            "the W&B exporter needs the wandb package: pip install runtel[wandb]"
        ) from exc
    return wandb


class WandbExporter(RecordTranslator):
    """Writes one runtel run as one W&B run, through the ``wandb.Run`` object's own methods.

    The API key, if given, is handed to wandb in memory (``wandb.Settings(api_key=...)``)
    and never written anywhere by this exporter.
    """

    name = "wandb"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        project: str | None = None,
        entity: str | None = None,
        mode: str | None = None,
        dir: str | None = None,
        api_key: str | None = None,
        force: bool = False,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._wandb = _import_wandb()
        # Now, on the caller's thread: wandb registers its service's atexit teardown when it starts it.
        self._wandb.setup().ensure_service()
        self._force = force
        self._project = project
        self._entity = entity
        # Resolved now, like the folder: wandb's process-wide settings would otherwise decide.
        self._mode = mode or os.environ.get("WANDB_MODE") or "online"
        # Resolved now: wandb caches its first run's folder process-wide, so later runs would follow it.
        # Absolute: a wandb-core service shared with a parent process (WANDB_SERVICE) writes the
        # transaction log of a relative dir nowhere the run's folder is.
        self._dir = os.path.abspath(dir or os.environ.get("WANDB_DIR") or os.getcwd())
        self._api_key = api_key
        self._init_kwargs = init_kwargs
        self._run: wandb_module.Run | None = None
        self._params: dict[str, Any] = {}
        self._row_step: int | None = None
        self._row_time = -math.inf
        self._checked_id: str | None = None  # the run id whose duplicate check has passed
        #: a gallery's items seen so far, by (name, step): index -> (time, wandb value)
        self._galleries: dict[tuple[str, int], dict[int, tuple[float, Any]]] = {}
        #: each gallery's item count, by (name, step)
        self._counts: dict[tuple[str, int], int] = {}

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Everything exported is already in wandb's hands; wandb has no public flush."""
        return True

    def shutdown(self) -> None:
        """Finish a run that never got its ``RunEnded`` as crashed, so W&B does not leave it running."""
        with self._lock:
            if self._run is not None:
                self._run.summary["runtel/status"] = "crashed"
                self._run.finish(exit_code=EXIT_CODES["crashed"])
                self._run = None

    @property
    def run(self) -> wandb_module.Run | None:
        """The live ``wandb.Run`` between ``RunStarted`` and ``RunEnded``."""
        return self._run

    def _active(self) -> wandb_module.Run:
        if self._run is None:
            raise RuntelError("wandb exporter got a record before RunStarted or after RunEnded")
        return self._run

    def _start(self, record: RunStarted) -> None:
        if self._run is not None:
            if self._run.id == record.run_id:
                # A retried batch: the run is open already, and re-logged points merge into their rows.
                return
            raise RuntelError(f"wandb exporter got a second RunStarted ({record.run_id}) in one run")
        if record.resumed:
            self._checked_id = record.run_id
        elif self._checked_id == record.run_id:
            self._remove_exports(record.run_id)  # a retry: this exporter's own failed attempt
        else:
            self._refuse_duplicate(record.run_id)
            self._checked_id = record.run_id
        # The run's own console and packages arrive as records (RUN_FILES): not this process's.
        settings = self._wandb.Settings(console="off", x_disable_stats=True, x_save_requirements=False)
        user_settings = self._init_kwargs.get("settings")
        if user_settings is not None:
            settings.update_from_settings(user_settings)
        if self._api_key is not None and not self._offline:  # offline runs never authenticate
            settings.api_key = self._api_key
        kwargs = {k: v for k, v in self._init_kwargs.items() if k != "settings"}
        sweep = sweep_attributes(record.resource)
        if sweep:  # a sweep's runs (itself and its trials) as one W&B group
            kwargs.setdefault("group", sweep[NAME_ATTRIBUTE])
            kwargs.setdefault("job_type", sweep[ROLE_ATTRIBUTE])
        self._params = _deep_merge({}, record.config)
        self._row_step, self._row_time = None, -math.inf
        self._run = self._wandb.init(
            project=self._project or record.project,
            entity=self._entity,
            mode=self._mode,
            dir=self._dir,
            id=record.run_id,
            name=record.name,
            config=record.config,
            tags=list(record.tags),
            resume="allow" if record.resumed else "never",
            reinit="create_new",
            settings=settings,
            **kwargs,
        )

    @property
    def _offline(self) -> bool:
        return self._mode in ("offline", "dryrun", "disabled")

    def _refuse_duplicate(self, run_id: str) -> None:
        """Offline: an earlier export of this run is refused, or deleted with ``force``. Online, the
        server refuses a second run with that id itself (``resume="never"``)."""
        if not self._offline:
            if self._force:
                raise RuntelError(
                    f"force cannot replace the online W&B run {run_id}: delete it in W&B, then export again"
                )
            return
        complete = [
            f for f in self._export_folders(run_id) if os.path.exists(os.path.join(f, COMPLETE_MARKER))
        ]
        if complete and not self._force:
            raise AlreadyExportedError(
                f"run {run_id} was already exported to W&B offline at {complete[0]} "
                "(sync or delete that folder, or export to another dir)",
                remedy="pass WandbExporter(..., force=True) to replace it",
            )
        self._remove_exports(run_id)

    def _export_folders(self, run_id: str) -> list[str]:
        pattern = os.path.join(glob.escape(self._dir), "wandb", f"*run-*-{run_id}*", f"run-{run_id}.wandb")
        return [os.path.dirname(path) for path in glob.glob(pattern)]

    def _remove_exports(self, run_id: str) -> None:
        """Delete the offline folders of ``run_id`` (earlier attempts, or all of them with ``force``)."""
        if self._offline:
            for folder in self._export_folders(run_id):
                shutil.rmtree(folder, ignore_errors=True)

    def _mark_complete(self, run: wandb_module.Run) -> None:
        if self._offline and os.path.isdir(run.dir):
            folder = os.path.dirname(run.dir)  # run.dir is <run folder>/files
            with open(os.path.join(folder, COMPLETE_MARKER), "w", encoding="utf-8") as marker:
                json.dump({"run_id": run.id, "complete": True}, marker)

    def _edit(self, record: RunEdited) -> None:
        """Tags, notes and the display name are W&B run fields: set on the run, written as a run update."""
        run = self._active()
        if record.tags_added or record.tags_removed:
            run.tags = edited_tags(tuple(run.tags or ()), record)
        if record.note is not None:
            run.notes = record.note
        if record.name is not None:
            run.name = record.name

    def _log_params(self, record: ParamsLogged) -> None:
        self._params = _deep_merge(self._params, record.params)
        changed = {key: self._params[key] for key in record.params}
        self._active().config.update(changed, allow_val_change=True)  # type: ignore[no-untyped-call]

    def _log_points(self, points: MetricPoints) -> None:
        """One ``run.log`` per run of consecutive points sharing a step, in logging order."""
        if len(points) == 0:
            return
        names = np.asarray(points.names, dtype=object)[points.index]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(points.steps)) + 1, [len(points)]))
        values = points.values.tolist()
        for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True):
            row: dict[str, Any] = dict(zip(names[lo:hi].tolist(), values[lo:hi], strict=True))
            self._log_row(row, int(points.steps[lo]), float(points.times[lo:hi].max()))

    def _log_span(self, span: SpanEnded) -> None:
        if span.kind != "epoch":
            return
        self._log_row(
            {EPOCH_SERIES: int(span.attributes["epoch"])},
            int(span.attributes["runtel.step_end"]),
            span.end_time,
        )

    def _log_artifact(self, record: ArtifactLogged) -> None:
        run = self._active()
        run_file = RUN_FILES.get((record.kind, record.name))
        if run_file is not None and os.path.isfile(record.path):
            # Where W&B's own capture puts them: its Logs tab shows output.log, its Files tab the rest.
            target = os.path.join(run.dir, run_file)
            shutil.copyfile(record.path, target)
            run.save(target, base_path=run.dir, policy="now")
            return
        artifact = self._wandb.Artifact(
            record.name,
            type="model" if record.kind == "model" else "artifact",
            metadata={
                **record.metadata,
                "runtel_version": record.version,
                "sha256": record.sha256,
                "size": record.size,
            },
        )
        if os.path.isdir(record.path):
            artifact.add_dir(record.path)
        else:
            artifact.add_file(record.path)
        run.log_artifact(artifact, aliases=["latest", f"runtel-v{record.version}"])

    def _log_figure(self, record: FigureLogged) -> None:
        self._log_row({record.name: self._wandb.Image(record.path)}, record.step, record.time)

    def _log_histogram(self, record: HistogramLogged) -> None:
        histogram = self._wandb.Histogram(np_histogram=(record.counts.tolist(), record.bin_edges.tolist()))
        self._log_row({record.name: histogram}, record.step, record.time)

    def _log_media(self, record: MediaLogged) -> None:
        value = self._media_value(record)
        if record.count == 1:
            self._log_row({record.name: value}, record.step, record.time)
            return
        items = self._galleries.setdefault((record.name, record.step), {})
        items[record.index] = (record.time, value)
        self._counts[record.name, record.step] = record.count
        if len(items) == record.count:
            self._log_gallery(record.name, record.step)

    def _log_gallery(self, name: str, step: int) -> None:
        """Log the gallery's items that came; those that did not are named in a warning."""
        items = self._galleries.pop((name, step))
        missing = sorted(set(range(self._counts.pop((name, step)))) - set(items))
        if missing:
            logger.warning(
                "runtel: the wandb exporter logs gallery %r at step %s before all its items came "
                "(items %s missing): W&B takes no row of an earlier step once a later one is logged",
                name,
                step,
                missing,
            )
        ordered = [items[i] for i in sorted(items)]
        self._log_row({name: [value for _, value in ordered]}, step, max(time for time, _ in ordered))

    def _media_value(self, record: MediaLogged) -> Any:
        wandb = self._wandb
        if record.kind == "image":
            return wandb.Image(record.path, caption=record.caption)
        if record.kind == "audio":
            return wandb.Audio(record.path, caption=record.caption)
        if record.kind == "text":
            return wandb.Html(f"<pre>{html.escape(read_text(record))}</pre>", inject=False)
        table = read_table(record)
        rows = [
            [wandb.Image(c.path, caption=c.caption) if isinstance(c, ImageCell) else c for c in row]
            for row in table.rows
        ]
        return wandb.Table(columns=table.columns, data=rows)

    def _log_row(self, row: dict[str, Any], step: int | None, time: float) -> None:
        """Log into the row of ``step`` (W&B's current row when None) with the row's latest time.

        Every ``run.log`` call sets the row's ``_timestamp`` (wandb stamps the export time when
        none is given), so a row logged in several calls is given the latest runtel time seen.
        """
        if step is not None:  # a pending gallery of an earlier step goes now: W&B drops it later
            for name, at in [key for key in self._galleries if key[1] < step]:
                self._log_gallery(name, at)
        if step is not None and step != self._row_step:
            self._row_step, self._row_time = step, time
        else:
            self._row_time = max(self._row_time, time)
        row["_timestamp"] = self._row_time
        if step is None:
            self._active().log(row, commit=False)
        else:
            self._active().log(row, step=step)

    def _end(self, record: RunEnded) -> None:
        for name, step in list(self._galleries):  # a run that ended mid-gallery: what did come
            self._log_gallery(name, step)
        run = self._active()
        run.summary.update(record.summary)
        run.summary["runtel/status"] = record.status
        if record.error is not None:
            run.summary["runtel/error"] = record.error
        run.finish(exit_code=EXIT_CODES[record.status])
        self._run = None
        self._mark_complete(run)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested dicts merged key by key (later values win)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
