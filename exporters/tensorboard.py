"""Exports a run to TensorBoard event files, one directory per run.

Events are built with tensorboardX's protos and summary helpers and written synchronously
by its ``EventsWriter`` on the exporter's own worker thread. ``SummaryWriter`` is not used:
it pickles every event through a ``multiprocessing.Queue``, its ``flush()`` does not drain
that queue, ``add_scalar`` rewrites tags (``_clean_tag``) and ``add_hparams`` writes into a
new sub-directory.

Layout of ``<log_dir>/<name>_<id8>/`` (a sweep's trials: ``<log_dir>/<sweep name>/<name>_<id8>/``, so
TensorBoard's HParams dashboard started on ``<log_dir>/<sweep name>`` compares exactly the trials):

- ``events.out.tfevents.*``: every metric as a scalar (tag = metric name, exact step and wall
  time, value as float32); epoch spans as the ``runtel/epoch`` scalar; figures as images
  ``figures/<name>`` (the PNG bytes unchanged); histograms ``histograms/<name>``; text
  ``runtel/params``, ``runtel/artifacts``, ``runtel/status``, ``runtel/summary`` and
  ``runtel/error``; media at their steps (below); at the end the hparams session (``_hparams_/*``)
  with every param, every scalar tag as a metric, and the run's status. Tags this exporter adds are
  under ``runtel/``, where no user metric reaches (the adaptation step renames one);
- ``artifacts/[models/]<name>/v<version>/<file>``: copies of the logged artifacts.

Media, tag = the media name, at the step: an image as an image summary (the PNG bytes unchanged);
a gallery as one image batch (the image plugin's sample slider, each PNG as logged, rather than
tensorboardX's ``add_images`` grid); captions (of any kind) as ``runtel/captions/<name>`` text at the
same step;
text as text; a table as a Markdown table (an Image cell as its file name); audio as an audio
summary (the WAV bytes unchanged). TensorBoard's loader keeps a sample of each tag's media steps
(``--samples_per_plugin``, e.g. ``images=0`` for all).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runtel.errors import AlreadyExportedError, ArtifactError, MissingExtraError, RuntelError
from runtel.exporters._media import markdown_table, read_table, read_text
from runtel.exporters.base import EPOCH_SERIES, Capabilities, ExportResult
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
from runtel.sweep import NAME_ATTRIBUTE, ROLE_ATTRIBUTE, sweep_attributes

if TYPE_CHECKING:
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

CAPABILITIES = Capabilities(
    # TensorBoard's data server (the default loader) keeps, per tag, only points whose step is
    # above every earlier one: a point at step s evicts all earlier points at steps >= s
    # (tensorboard/data/server/reservoir.rs, "Preemption").
    step_rule="strictly_increasing",
    # Scalars reach TensorBoard as float32: the data server turns only ``simple_value`` and
    # DT_FLOAT tensors into scalars and drops DT_DOUBLE ones (data_compat.rs,
    # ``tensor_proto_to_scalar``). NaN and +/-inf are kept.
    value_dtype="float32",
    # The hparams plugin holds only these (tensorboardX.summary.hparams: str, bool, int/float), and
    # no nesting: nested dicts are flattened with "/", None and lists sent as JSON text.
    param_types=(bool, int, float, str),
    media=("image", "table", "text", "audio"),
    exact_arrays=False,  # images as 8-bit PNG, audio as 16-bit WAV: the stored previews
    # An image summary holds one image, the images plugin's batch several; text and audio are one per
    # step here.
    galleries=("image",),
    table_images=False,  # a table is Markdown in the text plugin: an Image cell can only be its path
)

#: The hparams plugin knows only UNKNOWN, SUCCESS, FAILURE and RUNNING: a run that crashed or was
#: killed did not succeed. Its exact status is in the ``runtel/status`` text next to it.
_HPARAMS_STATUS = {
    "completed": "STATUS_SUCCESS",
    "failed": "STATUS_FAILURE",
    "crashed": "STATUS_FAILURE",
    "killed": "STATUS_FAILURE",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour type -> channels, as ``Summary.Image.colorspace`` counts them.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class TensorBoardExporter:
    """Writes each runtel run into ``<log_dir>/<name>_<id8>``.

    A run directory that already holds event files is refused with :class:`RuntelError`,
    since a second export would duplicate every point; ``force=True`` deletes that run
    directory first. Events are fsynced within ``flush_secs`` seconds of being written, and always at
    ``force_flush``, at the end of the run and at ``shutdown``.
    """

    name = "tensorboard"
    capabilities = CAPABILITIES

    def __init__(self, log_dir: str = "./runs", *, flush_secs: int = 1, force: bool = False) -> None:
        try:
            import tensorboardX  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError(
                "the TensorBoard exporter needs tensorboardX: pip install runtel[tensorboard]"
            ) from exc
        self._log_dir = log_dir
        self._flush_secs = flush_secs
        self._force = force
        self._run_id: str | None = None
        self._run_dir: str | None = None
        self._writer: EventsWriter | None = None
        self._last_flush = 0.0
        # The writer is flushed by the worker thread and by the deferred-flush timer.
        self._writer_lock = threading.Lock()
        self._flush_timer: threading.Timer | None = None
        self._params: dict[str, Any] = {}
        self._artifact_rows: dict[tuple[str, int], str] = {}
        self._scalar_tags: set[str] = set()
        #: a gallery's items seen so far, by (name, step): index -> record
        self._galleries: dict[tuple[str, int], dict[int, MediaLogged]] = {}
        self._is_shutdown = False

    @property
    def run_dir(self) -> str | None:
        """The directory of the current run (``None`` before ``RunStarted``)."""
        return self._run_dir

    def export(self, records: Sequence[Record]) -> ExportResult:
        """Write a batch. Events are built first and written together at the end, so a batch
        that fails (e.g. a missing artifact file) writes nothing and can simply be retried.
        """
        if self._is_shutdown:
            return ExportResult.FAILURE
        events: list[Event] = []
        ended: RunEnded | None = None
        for record in records:
            if isinstance(record, MetricPoints):
                events.extend(self._scalars(record))
            elif isinstance(record, ParamsLogged):
                events.append(self._params_text(record.params, record.time))
            elif isinstance(record, SpanEnded):
                if record.kind == "epoch":
                    attributes = record.attributes
                    step = int(attributes["runtel.step_end"])
                    events.append(
                        self._scalar(EPOCH_SERIES, step, record.end_time, float(attributes["epoch"]))
                    )
            elif isinstance(record, RunStarted):
                self._start(record)
                events.append(self._params_text(record.config, record.start_time))
            elif isinstance(record, ArtifactLogged):
                events.append(self._artifact(record))
            elif isinstance(record, FigureLogged):
                events.append(self._figure(record))
            elif isinstance(record, HistogramLogged):
                events.append(self._histogram(record))
            elif isinstance(record, MediaLogged):
                events.extend(self._media(record))
            elif isinstance(record, RunEnded):
                events.extend(self._unfinished_galleries())
                events.extend(self._end(record))
                ended = record
        if events:
            with self._writer_lock:
                writer = self._open_writer()
                for event in events:
                    writer.write_event(event)
            if ended is not None:
                self._flush()
            else:
                self._flush_within(self._flush_secs)
        if ended is not None:
            self._close()
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write what is buffered to disk (fsync); TensorBoard sees it at its next reload."""
        self._flush()
        return True

    def shutdown(self) -> None:
        self._close()
        self._is_shutdown = True

    def _start(self, record: RunStarted) -> None:
        if record.run_id == self._run_id:
            return  # The same batch again after a failure: the run directory is already ours.
        self._close()
        run_dir = os.path.join(self._log_dir, *_sweep_folder(record), f"{record.name}_{record.run_id[:8]}")
        exported = os.path.isdir(run_dir) and any(
            f.startswith("events.out.tfevents.") for f in os.listdir(run_dir)
        )
        if exported and not record.resumed:  # a resumed run appends a new event file to its folder
            if not self._force:
                raise AlreadyExportedError(
                    f"run {record.run_id} was already exported to TensorBoard in {run_dir}",
                    remedy="pass TensorBoardExporter(..., force=True) to replace it",
                )
            shutil.rmtree(run_dir)
        self._run_id, self._run_dir = record.run_id, run_dir
        self._params, self._artifact_rows, self._scalar_tags = {}, {}, set()
        self._galleries = {}

    def _open_writer(self) -> EventsWriter:
        if self._writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            os.makedirs(self._directory(), exist_ok=True)
            self._writer = EventsWriter(os.path.join(self._directory(), "events"))
        return self._writer

    def _directory(self) -> str:
        if self._run_dir is None:
            raise RuntelError(
                "the TensorBoard exporter got a record before RunStarted; records must start a run"
            )
        return self._run_dir

    def _flush_within(self, seconds: float) -> None:
        """Flush now if the last flush is ``seconds`` old, else arm a timer for when it will be.

        A replay sends thousands of batches a second, so not every batch is fsynced; the timer makes
        sure the last batch before a pause (or a crash) reaches the disk within ``seconds`` anyway.
        """
        with self._writer_lock:
            due = self._last_flush + seconds - time.monotonic()
            if due > 0:
                if self._flush_timer is None:
                    self._flush_timer = threading.Timer(due, self._flush)
                    self._flush_timer.daemon = True
                    self._flush_timer.start()
                return
        self._flush()

    def _flush(self) -> None:
        with self._writer_lock:
            if self._flush_timer is not None:
                self._flush_timer.cancel()  # a no-op when the timer itself is flushing
                self._flush_timer = None
            if self._writer is not None:
                self._writer.flush()
            self._last_flush = time.monotonic()

    def _close(self) -> None:
        with self._writer_lock:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    @staticmethod
    def _event(summary: Summary, step: int, wall_time: float) -> Event:
        from tensorboardX.proto.event_pb2 import Event

        return Event(wall_time=wall_time, step=step, summary=summary)

    def _scalar(self, tag: str, step: int, wall_time: float, value: float) -> Event:
        from tensorboardX.proto.summary_pb2 import Summary

        self._scalar_tags.add(tag)
        return self._event(Summary(value=[Summary.Value(tag=tag, simple_value=value)]), step, wall_time)

    def _scalars(self, points: MetricPoints) -> list[Event]:
        events: list[Event] = []
        for name, positions in points.by_name().items():
            steps = points.steps[positions].tolist()
            times = points.times[positions].tolist()
            values = points.values[positions].tolist()
            events.extend(self._scalar(name, s, t, v) for s, t, v in zip(steps, times, values, strict=True))
        return events

    def _text(self, tag: str, text: str, wall_time: float) -> Event:
        from tensorboardX.summary import text as text_summary

        return self._event(text_summary(tag, text), 0, wall_time)

    def _params_text(self, params: dict[str, Any], wall_time: float) -> Event:
        """The table of every param so far, at step 0, so the text plugin shows the full set."""
        self._params.update(params)
        rows = [f"| {_cell(key)} | {_cell(repr(value))} |" for key, value in self._params.items()]
        return self._text("runtel/params", "\n".join(["| param | value |", "|---|---|", *rows]), wall_time)

    def _artifact(self, record: ArtifactLogged) -> Event:
        prefix = "models/" if record.kind == "model" else ""
        relative = os.path.join("artifacts", f"{prefix}{record.name}", f"v{record.version}")
        target = os.path.join(self._directory(), relative)
        if os.path.isdir(record.path):
            shutil.copytree(record.path, target, dirs_exist_ok=True)
        else:
            os.makedirs(target, exist_ok=True)
            shutil.copy2(record.path, target)
            relative = os.path.join(relative, os.path.basename(record.path))
        self._artifact_rows[record.name, record.version] = (
            f"| {_cell(record.name)} | {record.version} | {record.kind} | {record.size} "
            f"| {record.sha256} | {_cell(relative)} |"
        )
        header = ["| name | version | kind | bytes | sha256 | path |", "|---|---|---|---|---|---|"]
        return self._text(
            "runtel/artifacts", "\n".join([*header, *self._artifact_rows.values()]), record.time
        )

    def _figure(self, record: FigureLogged) -> Event:
        """The PNG as written, without decoding."""
        from tensorboardX.proto.summary_pb2 import Summary

        image = _image_summary(_read_png(record.name, record.path))
        summary = Summary(value=[Summary.Value(tag=f"figures/{record.name}", image=image)])
        return self._event(summary, record.step if record.step is not None else 0, record.time)

    def _media(self, record: MediaLogged) -> list[Event]:
        if record.kind == "image":
            if record.count == 1:
                return self._images([record])
            items = self._galleries.setdefault((record.name, record.step), {})
            items[record.index] = record
            if len(items) < record.count:
                return []  # the rest of the gallery comes in this batch or the next
            del self._galleries[record.name, record.step]
            return self._images([items[i] for i in sorted(items)])
        if record.kind == "audio":
            return [self._audio(record), *self._captions([record])]
        text = markdown_table(read_table(record)) if record.kind == "table" else read_text(record)
        return [
            self._event(_text_summary(record.name, text), record.step, record.time),
            *self._captions([record]),
        ]

    def _unfinished_galleries(self) -> list[Event]:
        """Galleries the run ended before all items of came (a crash mid-gallery): what did come."""
        events = [event for items in self._galleries.values() for event in self._images(list(items.values()))]
        self._galleries = {}
        return events

    def _images(self, items: list[MediaLogged]) -> list[Event]:
        """One image as an image summary, several as the images plugin's batch tensor."""
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.proto.tensor_pb2 import TensorProto
        from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

        first = items[0]
        pngs = [_read_png(item.name, item.path) for item in items]
        if len(items) == 1:
            value = Summary.Value(tag=first.name, image=_image_summary(pngs[0]))
        else:
            width, height = int.from_bytes(pngs[0][16:20], "big"), int.from_bytes(pngs[0][20:24], "big")
            tensor = TensorProto(
                dtype="DT_STRING",
                tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=len(pngs) + 2)]),
                string_val=[str(width).encode(), str(height).encode(), *pngs],
            )
            metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="images"))
            value = Summary.Value(tag=first.name, metadata=metadata, tensor=tensor)
        return [self._event(Summary(value=[value]), first.step, first.time), *self._captions(items)]

    def _captions(self, items: list[MediaLogged]) -> list[Event]:
        """The items' captions as ``runtel/captions/<name>`` text at their step (none: no event)."""
        captions = [(item.index, item.caption) for item in items if item.caption is not None]
        if not captions:
            return []
        first = items[0]
        lines = "\n".join(f"{index}. {_cell(caption)}" for index, caption in captions)
        return [self._event(_text_summary(f"runtel/captions/{first.name}", lines), first.step, first.time)]

    def _audio(self, record: MediaLogged) -> Event:
        """The WAV file as written: rate, channels and frames from the record."""
        from tensorboardX.proto.summary_pb2 import Summary

        with open(record.path, "rb") as file:
            data = file.read()
        audio = Summary.Audio(
            sample_rate=float(record.meta.get("sample_rate", 0)),
            num_channels=int(record.meta.get("channels", 1)),
            length_frames=int(record.meta.get("frames", 0)),
            encoded_audio_string=data,
            content_type="audio/wav",
        )
        return self._event(
            Summary(value=[Summary.Value(tag=record.name, audio=audio)]), record.step, record.time
        )

    def _histogram(self, record: HistogramLogged) -> Event:
        """Bucket right edges and counts as given; ``sum``/``sum_squares`` follow from mean and std."""
        from tensorboardX.summary import histogram_raw

        summary = histogram_raw(
            f"histograms/{record.name}",
            min=record.min,
            max=record.max,
            num=record.count,
            sum=record.mean * record.count,
            sum_squares=record.count * (record.std**2 + record.mean**2),
            bucket_limits=record.bin_edges[1:].tolist(),
            bucket_counts=record.counts.tolist(),
        )
        return self._event(summary, record.step, record.time)

    def _end(self, record: RunEnded) -> list[Event]:
        events = [self._event(summary, 0, record.end_time) for summary in self._hparams(record)]
        events.append(self._text("runtel/status", record.status, record.end_time))
        if record.summary:
            text = "```json\n" + json.dumps(record.summary, indent=2, default=str) + "\n```"
            events.append(self._text("runtel/summary", text, record.end_time))
        if record.error:
            events.append(self._text("runtel/error", "```\n" + record.error + "\n```", record.end_time))
        return events

    def _hparams(self, record: RunEnded) -> list[Summary]:
        """The hparams session in the run's own directory, with the run's real end status."""
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.proto.tensor_pb2 import TensorProto
        from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboardX.summary import hparams

        experiment, start, _ = hparams(self._params, dict.fromkeys(sorted(self._scalar_tags), 0.0))
        end_info = SessionEndInfo(
            status=Status.Value(_HPARAMS_STATUS[record.status]), end_time_secs=record.end_time
        )
        plugin_data = SummaryMetadata.PluginData(
            plugin_name="hparams", content=HParamsPluginData(session_end_info=end_info).SerializeToString()
        )
        end = Summary(
            value=[
                Summary.Value(
                    tag="_hparams_/session_end_info", metadata=SummaryMetadata(plugin_data=plugin_data)
                )
            ]
        )
        # TensorBoard's own hparams writer attaches an empty float tensor (metadata.NULL_TENSOR) so
        # that loaders which expect a value on every summary keep these metadata-only ones.
        empty = TensorProto(
            dtype="DT_FLOAT", tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=0)])
        )
        summaries = [experiment, start, end]
        for summary in summaries:
            summary.value[0].tensor.CopyFrom(empty)
        return summaries


def _text_summary(tag: str, text: str) -> Summary:
    """Text under exactly ``tag``, as TensorBoard's own ``tf.summary.text`` writes it (tensorboardX's
    ``text`` would append ``/text_summary`` to a user's media name)."""
    from tensorboardX.proto.plugin_text_pb2 import TextPluginData
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_pb2 import TensorProto
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto

    content = TextPluginData(version=0).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text", content=content))
    tensor = TensorProto(
        dtype="DT_STRING",
        string_val=[text.encode("utf-8")],
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


def _read_png(name: str, path: str) -> bytes:
    with open(path, "rb") as file:
        png = file.read()
    if png[:8] != _PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise ArtifactError(f"image {name!r}: {path} is not a PNG file")
    return png


def _image_summary(png: bytes) -> Summary.Image:
    """An image summary of PNG bytes: width, height and channels come from its header."""
    from tensorboardX.proto.summary_pb2 import Summary

    return Summary.Image(
        width=int.from_bytes(png[16:20], "big"),
        height=int.from_bytes(png[20:24], "big"),
        colorspace=_PNG_CHANNELS.get(png[25], 3),
        encoded_image_string=png,
    )


def _cell(text: str) -> str:
    """Text safe inside one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _sweep_folder(record: RunStarted) -> list[str]:
    """``[<sweep name>]`` for a sweep's trial (odd characters replaced, never a path), else nothing."""
    sweep = sweep_attributes(record.resource)
    if sweep.get(ROLE_ATTRIBUTE) != "trial":
        return []
    return [re.sub(r"[^\w.\-]", "_", sweep[NAME_ATTRIBUTE]).lstrip(".") or "sweep"]
