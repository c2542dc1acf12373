"""Import W&B offline runs: each ``offline-run-*`` folder's transaction log ``run-<id>.wandb``.

History rows become series at their ``_step`` with their ``_timestamp`` (values exact: W&B keeps
them as JSON text); a row without ``_step`` gets the step after the previous row (reported
``step_missing``). Config, summary (as ``source_summary``), notes, tags, host and exit code come
in; system ``stats`` records become ``system/<key>`` series at the history step current when they
were taken; every file under ``files/`` is copied into the artifact store. ``wandb.Histogram``
values become histograms and ``wandb.Image`` files figures; other media and non-numeric history
values are reported as skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from runtel.errors import ConfigError, MissingExtraError
from runtel.importers import _wandb_log
from runtel.importers._source import (
    ImportReport,
    Pending,
    Series,
    Skipped,
    SourceFile,
    SourceImage,
    SourceRun,
    fingerprint_of,
)
from runtel.records import HistogramLogged

SOURCE = "wandb"
_INTERNAL = {"_step", "_timestamp", "_runtime"}
_MAX_EXACT_INT = 2**53


def discover(path: str | None, **options: Any) -> Iterator[Pending | Skipped]:
    """Every offline run folder at or under ``path`` (a ``wandb`` folder, its parent, or one run)."""
    if options:
        raise ConfigError(f"the W&B importer takes no options; got {sorted(options)}")
    _require()
    if path is None:
        raise ConfigError("name the wandb folder to import, e.g. runtel import wandb ./wandb")
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"no wandb folder at {str(root)!r} (no such folder)")
    folders = [root] if root.name.startswith("offline-run-") else sorted(root.glob("**/offline-run-*"))
    if not folders:
        yield Skipped(str(root), "no offline-run-* folders here or below")
    for folder in folders:
        logs = sorted(folder.glob("run-*.wandb"))
        if not folder.is_dir() or len(logs) != 1:
            yield Skipped(str(folder), f"expected one run-<id>.wandb transaction log, found {len(logs)}")
            continue
        log = logs[0]
        yield Pending(
            source=SOURCE,
            source_id=f"{log.stem[len('run-') :]}|{folder.name}",
            source_path=str(folder),
            fingerprint=fingerprint_of([log]),
            load=partial(read_run, folder, log),
        )


def read_run(folder: Path, log: Path) -> SourceRun:
    run = SourceRun(SOURCE, "", str(folder), folder.name, "", 0.0, 0.0)
    report = run.report
    points: dict[str, list[tuple[int, float, float]]] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    step, last_time, exit_code = -1, 0.0, None
    try:
        for record in _wandb_log.records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                _start(run, record.run)
                _update(config, record.run.config.update, record.run.config.remove)
            elif kind == "config":
                _update(config, record.config.update, record.config.remove)
            elif kind == "history":
                row = {_key(item): _value(item) for item in record.history.item}
                given = row.get("_step")
                if isinstance(given, int) and not isinstance(given, bool):
                    step = given
                else:
                    step += 1
                    report.add("step_missing", 1, {"row": sorted(row)[:5], "step_given": step})
                when = row.get("_timestamp")
                last_time = float(when) if isinstance(when, int | float) else last_time
                for key, value in _media(run, folder, row, step, last_time).items():
                    if key not in _INTERNAL:
                        _add_point(points, report, key, step, last_time, value)
            elif kind == "stats":
                when = record.stats.timestamp.seconds + record.stats.timestamp.nanos / 1e9
                for item in record.stats.item:
                    _add_point(points, report, f"system/{_key(item)}", max(step, 0), when, _value(item))
            elif kind == "summary":
                _update(summary, record.summary.update, record.summary.remove)
            elif kind == "exit":
                exit_code = record.exit.exit_code
                run.end_time = run.start_time + record.exit.runtime
            elif kind == "artifact":
                report.add("artifact_record_skipped", 1, {"artifact": record.artifact.name})
    except _wandb_log.TornLog as exc:
        report.add("log_truncated", 1, {"why": str(exc)})
    run.config = {key: value for key, value in config.items() if key != "_wandb"}
    run.source_summary = {key: value for key, value in summary.items() if not key.startswith("_wandb")}
    run.metrics = {
        key: Series(
            np.asarray([p[0] for p in found], dtype=np.int64),
            np.asarray([p[1] for p in found], dtype=np.float64),
            np.asarray([p[2] for p in found], dtype=np.float64),
        )
        for key, found in points.items()
    }
    run.end_time = max(run.end_time, last_time, run.start_time)
    if exit_code is None:
        run.status, run.error = "crashed", "the W&B log has no exit record (the run did not finish)"
    elif exit_code != 0:
        run.status, run.error = "failed", f"exit code {exit_code}"
    files = folder / "files"
    if files.is_dir():
        run.files = [
            SourceFile(path, path.relative_to(files).as_posix(), run.end_time)
            for path in sorted(files.rglob("*"))
            if path.is_file()
        ]
    return run


def _require() -> None:
    try:
        import wandb.proto.wandb_internal_pb2  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            "importing W&B runs needs the wandb package: pip install runtel[wandb]"
        ) from exc


def _start(run: SourceRun, record: Any) -> None:
    run.name = record.display_name or record.run_id
    run.project = record.project
    run.notes = record.notes or None
    run.tags = tuple(record.tags)
    run.host = record.host or None
    run.start_time = record.start_time.seconds + record.start_time.nanos / 1e9
    run.source_metadata = {
        "run_id": record.run_id,
        "entity": record.entity,
        "project": record.project,
        "group": record.run_group,
        "job_type": record.job_type,
        "git_commit": record.git.commit or None,
    }


def _media(run: SourceRun, folder: Path, row: dict[str, Any], step: int, when: float) -> dict[str, Any]:
    """Take W&B's typed values (``<key>/_type`` and its siblings) out of ``row``; returns the rest.

    Histograms become histograms and image files figures; other media are reported as skipped.
    """
    rest = dict(row)
    for key, value in row.items():
        if isinstance(value, dict) and isinstance(value.get("_type"), str):  # an unflattened value
            rest.pop(key)
            rest.update({f"{key}/{inner}": item for inner, item in value.items()})
    typed = {key[: -len("/_type")]: value for key, value in rest.items() if key.endswith("/_type")}
    for prefix, kind in typed.items():
        group = {key[len(prefix) + 1 :]: rest.pop(key) for key in list(rest) if key.startswith(prefix + "/")}
        if kind == "histogram":
            histogram = _histogram(prefix, step, when, group)
            if histogram is not None:
                run.histograms.append(histogram)
                run.report.add("histogram_moments_estimated", 1, {"histogram": prefix, "step": step})
                continue
        elif kind == "image-file":
            path = folder / "files" / str(group.get("path", ""))
            if path.is_file() and path.resolve().is_relative_to(folder.resolve()):
                suffix = str(group.get("format") or path.suffix.lstrip(".") or "png")
                run.images.append(SourceImage(prefix, step, when, path.read_bytes(), suffix))
                continue
        run.report.add("history_value_skipped", 1, {"key": prefix, "step": step, "type": str(kind)})
    return rest


def _histogram(name: str, step: int, when: float, group: dict[str, Any]) -> HistogramLogged | None:
    """W&B keeps bin edges and counts only: min/max are the outer edges, mean/std from bin centres."""
    try:
        edges = np.asarray(group["bins"], dtype=np.float64)
        counts = np.asarray(group["values"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        return None
    if edges.ndim != 1 or counts.ndim != 1 or edges.size != counts.size + 1 or not counts.size:
        return None
    total = int(counts.sum())
    centres = (edges[:-1] + edges[1:]) / 2
    mean = float((centres * counts).sum() / total) if total else math.nan
    std = float(np.sqrt((counts * (centres - mean) ** 2).sum() / total)) if total else math.nan
    return HistogramLogged(
        name, step, when, edges, counts, float(edges[0]), float(edges[-1]), mean, std, total
    )


def _add_point(
    points: dict[str, list[tuple[int, float, float]]],
    report: ImportReport,
    key: str,
    step: int,
    when: float,
    value: Any,
) -> None:
    if isinstance(value, bool):
        report.add("bool_as_number", 1, {"metric": key, "step": step})
        value = float(value)
    if not isinstance(value, int | float):
        report.add("history_value_skipped", 1, {"key": key, "step": step, "type": type(value).__name__})
        return
    if isinstance(value, int) and abs(value) > _MAX_EXACT_INT:
        report.add("int_rounded_to_float64", 1, {"metric": key, "step": step, "value": value})
    points.setdefault(key, []).append((step, when, float(value)))


def _update(target: dict[str, Any], updates: Any, removes: Any) -> None:
    for item in updates:
        target[_key(item)] = _value(item)
    for item in removes:
        target.pop(_key(item), None)


def _key(item: Any) -> str:
    nested = getattr(item, "nested_key", None)  # config items have none
    return "/".join(nested) if nested else str(item.key)


def _value(item: Any) -> Any:
    return json.loads(item.value_json, parse_constant=_constant)


def _constant(token: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[token]
