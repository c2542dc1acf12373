"""Import TensorBoard log dirs: one run per folder holding event files, read by TensorBoard's own
``EventAccumulator`` with no size limits and no purging of "orphaned" steps, so every event arrives.

Scalars (``simple_value``, float32 in the file, reported as ``source_float32``, and new-style scalar
tensors), histograms, images (as figures) and hparams (as the run's config) are imported; text, audio,
graphs and other plugins' tensors are counted in the report as skipped, with examples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from runtel.errors import ConfigError, MissingExtraError
from runtel.importers._source import (
    ImportReport,
    Pending,
    Series,
    Skipped,
    SourceImage,
    SourceRun,
    fingerprint_of,
)
from runtel.records import HistogramLogged

SOURCE = "tensorboard"
_EVENTS_MARK = "tfevents"
_HPARAMS_PLUGIN = "hparams"


def discover(path: str | None, **options: Any) -> Iterator[Pending | Skipped]:
    """Every folder under the log dir ``path`` that holds event files, as one pending run each."""
    if options:
        raise ConfigError(f"the TensorBoard importer takes no options; got {sorted(options)}")
    _require()
    if path is None:
        raise ConfigError("name the TensorBoard log dir to import, e.g. runtel import tensorboard ./runs")
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"no log dir at {str(root)!r} (no such folder)")
    found = False
    for folder, _, files in sorted(os.walk(root)):
        events = sorted(Path(folder, name) for name in files if _EVENTS_MARK in name)
        if not events:
            continue
        found = True
        relative = Path(folder).relative_to(root).as_posix()
        name = root.resolve().name if relative == "." else relative
        yield Pending(
            source=SOURCE,
            source_id=f"{relative}|{'|'.join(event.name for event in events)}",
            source_path=str(Path(folder)),
            fingerprint=fingerprint_of(events),
            load=partial(read_run, Path(folder), name, root.resolve().name),
        )
    if not found:
        yield Skipped(str(root), "no TensorBoard event files (*tfevents*) in this folder or below it")


def read_run(folder: Path, name: str, project: str) -> SourceRun:
    """One events folder as a source run; raises what TensorBoard's reader raises on a damaged file."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    guidance = {kind: 0 for kind in (ea.SCALARS, ea.HISTOGRAMS, ea.IMAGES, ea.TENSORS, ea.AUDIO)}
    guidance[ea.COMPRESSED_HISTOGRAMS] = 0
    accumulator = ea.EventAccumulator(str(folder), size_guidance=guidance, purge_orphaned_data=False)
    accumulator.Reload()
    tags = accumulator.Tags()
    start = accumulator.FirstEventTimestamp()
    run = SourceRun(
        source=SOURCE,
        source_id="",
        source_path=str(folder),
        name=name,
        project=project,
        start_time=start,
        end_time=start,
    )
    report = run.report
    latest = [start]
    for tag in tags[ea.SCALARS]:
        events = accumulator.Scalars(tag)
        run.metrics[tag] = _series([(e.step, e.wall_time, e.value) for e in events])
        report.add("source_float32", len(events), {"metric": tag, "points": len(events)})
        latest.append(max(e.wall_time for e in events))
    plugins = {tag: accumulator.SummaryMetadata(tag).plugin_data.plugin_name for tag in tags[ea.TENSORS]}
    for tag, plugin in plugins.items():
        events = accumulator.Tensors(tag)
        latest.extend(e.wall_time for e in events)
        if plugin == "scalars":
            arrays = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
            run.metrics[tag] = _series(
                [(e.step, e.wall_time, float(a)) for e, a in zip(events, arrays, strict=True)]
            )
            narrow = sum(1 for a in arrays if a.dtype.itemsize < 8)
            report.add("source_float32", narrow, {"metric": tag, "points": narrow})
        elif plugin != _HPARAMS_PLUGIN:
            _skip_tensors(report, tag, plugin or "tensor", events, tensor_util)
    for tag in tags[ea.HISTOGRAMS]:
        for event in accumulator.Histograms(tag):
            run.histograms.append(_histogram(tag, event, report))
            latest.append(event.wall_time)
    for tag in tags[ea.IMAGES]:
        for event in accumulator.Images(tag):
            data = event.encoded_image_string
            run.images.append(SourceImage(tag, int(event.step), event.wall_time, data, _suffix(data)))
            latest.append(event.wall_time)
    for tag in tags[ea.AUDIO]:
        events = accumulator.Audio(tag)
        report.add("audio_skipped", len(events), {"tag": tag, "steps": [e.step for e in events[:3]]})
    if tags.get(ea.GRAPH) or tags.get(ea.META_GRAPH):
        report.add("graph_skipped", 1, {"folder": str(folder)})
    run.config = _hparams(accumulator)
    run.end_time = max(latest)
    report.add("status_assumed", 1, {"status": "completed", "why": "TensorBoard logs hold no run status"})
    return run


def _require() -> None:
    try:
        import tensorboard.backend.event_processing.event_accumulator  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "importing TensorBoard logs needs the tensorboard package: pip install runtel[tensorboard]"
        ) from exc


def _series(points: list[tuple[int, float, float]]) -> Series:
    steps, times, values = zip(*points, strict=True) if points else ((), (), ())
    return Series(
        np.asarray(steps, dtype=np.int64), np.asarray(times, dtype=np.float64), np.asarray(values, np.float64)
    )


def _histogram(tag: str, event: Any, report: ImportReport) -> HistogramLogged:
    """TensorBoard keeps right bucket edges only; the first left edge is the minimum (reported)."""
    value = event.histogram_value
    counts = np.asarray(value.bucket, dtype=np.float64)
    whole = counts.astype(np.int64)
    if not np.array_equal(whole, counts):
        report.add("histogram_counts_rounded", 1, {"histogram": tag, "step": int(event.step)})
    report.add("histogram_first_edge_from_min", 1, {"histogram": tag, "step": int(event.step)})
    number = float(value.num)
    mean = value.sum / number if number else math.nan
    variance = value.sum_squares / number - mean * mean if number else math.nan
    return HistogramLogged(
        name=tag,
        step=int(event.step),
        time=float(event.wall_time),
        bin_edges=np.asarray([value.min, *value.bucket_limit], dtype=np.float64),
        counts=whole,
        min=float(value.min),
        max=float(value.max),
        mean=float(mean),
        std=math.sqrt(max(variance, 0.0)) if number else math.nan,
        count=int(number),
    )


def _skip_tensors(report: ImportReport, tag: str, plugin: str, events: list[Any], tensor_util: Any) -> None:
    """Text and other plugins' tensors have no place in the store yet: counted, with what they held."""
    kind = "text_skipped" if plugin == "text" else f"{plugin}_skipped"
    for event in events:
        example: dict[str, Any] = {"tag": tag, "step": int(event.step)}
        if plugin == "text":
            array = tensor_util.make_ndarray(event.tensor_proto)
            example["text"] = " ".join(
                item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                for item in np.asarray(array).ravel()
            )[:200]
        report.add(kind, 1, example)


def _hparams(accumulator: Any) -> dict[str, Any]:
    """The hparams of the session-start summary (``add_hparams``), as plain values."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        content: dict[str, bytes] = accumulator.PluginTagToContent(_HPARAMS_PLUGIN)
    except KeyError:  # no hparams in this folder
        return {}
    config: dict[str, Any] = {}
    for data in content.values():
        plugin_data = plugin_data_pb2.HParamsPluginData.FromString(data)
        if plugin_data.WhichOneof("data") != "session_start_info":
            continue
        for key, value in plugin_data.session_start_info.hparams.items():
            kind = value.WhichOneof("kind")
            config[key] = getattr(value, kind) if kind is not None else None
    return config


def _suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data.startswith(b"GIF8"):
        return "gif"
    return "bin"
