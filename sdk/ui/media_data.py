"""What the UI's media section shows, read from a run's ``events.jsonl``: plain data, no Dash.

A run's media, figures and histograms are indexed once per change of ``events.jsonl`` (its size and
modification time), so a slider over thousands of steps re-reads nothing; only the files of the step
on screen are ever opened. Every file a record names is checked to stay inside the run folder, and the
set of those files is what the media route may serve (:func:`listed_file`); a record whose path leads
elsewhere is left out of the index with a note, and the rest of the run is shown.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from runtel.errors import StoreCorruptError
from runtel.records import FigureLogged, HistogramLogged, MediaLogged
from runtel.store import _layout
from runtel.store._events import MEDIA_PATH, read_events
from runtel.store._untrusted import inside, relocated
from runtel.store.media import checked_by_name
from runtel.store.query import StoredRun, run_file
from runtel.store.scan import READ_ERRORS, reason

TrackKind = Literal["image", "audio", "text", "table", "figure", "histogram"]
#: The order kinds are offered in: what a person scrolls through first.
KINDS: tuple[TrackKind, ...] = ("image", "audio", "text", "table", "figure", "histogram")
#: Where the media route lives on the UI's server; the rest of a URL is ``<run id>/<path in the run>``.
ROUTE = "/_runtel/media"
#: TensorBoard's distribution bands: the least and greatest values, the percentiles 1.5, 1 and 0.5 standard
#: deviations of a normal either side of the median, and the median.
PERCENTILES = (0.0, 6.68, 15.87, 30.85, 50.0, 69.15, 84.13, 93.32, 100.0)
#: At most this many characters of a text item are sent to the page.
TEXT_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Item:
    """One thing shown at one step: a media file, or a logged figure (``kind`` "figure")."""

    kind: TrackKind
    name: str
    step: int
    #: The file to show (the PNG or WAV preview of an exact ``.npy``), relative to the run folder.
    file: str
    caption: str | None = None
    index: int = 0
    count: int = 1
    sha256: str | None = None
    size: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Track:
    """Everything logged under one name of one kind, by step (steps sorted, each step's items in order)."""

    kind: TrackKind
    name: str
    steps: npt.NDArray[np.int64]
    items: dict[int, list[Item]]


@dataclass(frozen=True, slots=True)
class RunMedia:
    """The media index of one run: tracks by key (:func:`key_of`), histograms, servable files, notes."""

    tracks: dict[str, Track]
    histograms: dict[str, list[HistogramLogged]]
    files: frozenset[str]
    notes: tuple[str, ...] = ()

    def all_keys(self) -> list[str]:
        return [*self.tracks, *(key_of("histogram", name) for name in self.histograms)]


def key_of(kind: TrackKind, name: str) -> str:
    """The key of a track in the page (a kind and a name: one name may hold a figure and a histogram)."""
    return f"{kind}:{name}"


def split_key(key: object) -> tuple[TrackKind, str] | None:
    """``(kind, name)`` of a key sent back by the browser, or None when it is not one."""
    if not isinstance(key, str):
        return None
    kind, colon, name = key.partition(":")
    for known in KINDS:
        if kind == known and colon and name:
            return known, name
    return None


def run_media(run: StoredRun) -> RunMedia:
    """The run's index, re-read only when ``events.jsonl`` changed; a damaged log gives an empty index
    with the reason as its note."""
    path = run_file(run.dir, _layout.EVENTS)
    try:
        info = path.stat()
    except FileNotFoundError:
        return RunMedia({}, {}, frozenset())
    except OSError as exc:
        return RunMedia({}, {}, frozenset(), (f"{_layout.EVENTS} cannot be read ({exc.strerror})",))
    return _indexed(str(run.dir), info.st_ino, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _indexed(run_dir: str, inode: int, size: int, mtime_ns: int) -> RunMedia:
    return _index(Path(run_dir))


def _index(run_dir: Path) -> RunMedia:
    events = run_dir / _layout.EVENTS
    try:
        records = read_events(run_file(run_dir, _layout.EVENTS)).records
    except READ_ERRORS as exc:
        return RunMedia({}, {}, frozenset(), (reason(exc, run_dir),))
    grouped: dict[str, dict[int, list[Item]]] = {}
    kinds: dict[str, tuple[TrackKind, str]] = {}
    histograms: dict[str, dict[int, HistogramLogged]] = {}
    files: set[str] = set()
    notes: list[str] = []
    for record in records:
        try:
            if isinstance(record, HistogramLogged):
                histograms.setdefault(record.name, {})[record.step] = record  # the last one of a step
                continue
            if isinstance(record, MediaLogged):
                item, servable = _media_item(run_dir, events, record)
            elif isinstance(record, FigureLogged):
                item = _figure_item(run_dir, events, record)
                servable = (item.file,)
            else:
                continue
        except StoreCorruptError as exc:
            notes.append(f"{getattr(record, 'name', '?')}: {reason(exc, run_dir)}")
            continue
        key = key_of(item.kind, item.name)
        kinds[key] = (item.kind, item.name)
        grouped.setdefault(key, {}).setdefault(item.step, []).append(item)
        files.update(servable)
    tracks = {
        key: Track(*kinds[key], np.array(sorted(by_step), dtype=np.int64), by_step)
        for key, by_step in sorted(grouped.items(), key=lambda entry: KINDS.index(kinds[entry[0]][0]))
    }
    for by_step in grouped.values():
        for items in by_step.values():
            items.sort(key=lambda item: item.index)  # stable: re-logged items keep their order
    ordered = {name: [by_step[step] for step in sorted(by_step)] for name, by_step in histograms.items()}
    return RunMedia(tracks, ordered, frozenset(files), tuple(notes))


def _media_item(run_dir: Path, events: Path, record: MediaLogged) -> tuple[Item, tuple[str, ...]]:
    stored = relative_file(run_dir, record.path, "media", events)
    preview = relative_file(run_dir, record.preview, "media", events) if record.preview else None
    shown = preview or stored  # an exact .npy is shown by its PNG or WAV preview
    item = Item(
        kind=record.kind,
        name=record.name,
        step=record.step,
        file=shown,
        caption=record.caption,
        index=record.index,
        count=record.count,
        sha256=record.sha256,
        size=record.size,
        meta=dict(record.meta),
    )
    return item, (stored,) if preview is None else (stored, preview)


def _figure_item(run_dir: Path, events: Path, record: FigureLogged) -> Item:
    file = relative_file(run_dir, record.path, "plots", events)
    step = record.step if record.step is not None else 0
    caption = None if record.step is not None else "logged without a step"
    return Item(kind="figure", name=record.name, step=step, file=file, caption=caption)


def relative_file(run_dir: Path, stored: str, anchor: str, events: Path) -> str:
    """The run-folder-relative path (``/``-separated) of a file a record names, checked to stay inside.

    A relative path is checked as text (no ``..``, nothing absolute), so indexing thousands of records
    touches no file; every read and send resolves it again with its links (:func:`listed_file`). An
    absolute one (a live run writes figures so) is found again from its ``anchor`` component on, so a
    folder moved to another machine still finds its files.
    """
    if PurePosixPath(stored).is_absolute() or Path(stored).is_absolute():
        found = relocated(run_dir, stored, anchor, events, "path")
        return found.relative_to(run_dir.resolve()).as_posix()
    parts = PurePosixPath(stored).parts
    if not parts or ".." in parts or "\\" in stored or "\0" in stored:
        raise StoreCorruptError(events, "path", f"{stored!r} leads outside the run folder {run_dir}")
    return PurePosixPath(*parts).as_posix()


def listed_file(run: StoredRun, relative: str) -> Path | None:
    """The file at ``relative`` in the run folder if a record of the run lists it and it exists, else None.

    ``relative`` comes from a browser: it is only compared with the index, never used to build a path
    until it matches, and the path is resolved again: a link put there since that leads out of the
    folder raises :class:`~runtel.errors.StoreCorruptError`.
    """
    if relative not in run_media(run).files:
        return None
    found = inside(run.dir, relative, run.dir / _layout.EVENTS, "path")
    if not found.is_file():
        return None
    if MEDIA_PATH.fullmatch(relative):
        checked_by_name(found, "path")  # a content-addressed file changed on disk is not served
    return found


def media_url(run_id: str, relative: str) -> str:
    return f"{ROUTE}/{quote(run_id, safe='')}/{quote(relative, safe='/')}"


def track_keys(runs: Sequence[StoredRun]) -> list[tuple[str, TrackKind, str]]:
    """``(key, kind, name)`` of every track any run has: by kind, then in first-seen order."""
    seen: dict[str, tuple[TrackKind, str]] = {}
    for run in runs:
        index = run_media(run)
        for key in index.all_keys():
            parsed = split_key(key)
            if parsed is not None:
                seen.setdefault(key, parsed)
    ordered = sorted(seen.items(), key=lambda entry: KINDS.index(entry[1][0]))
    return [(key, kind, name) for key, (kind, name) in ordered]


def union_steps(indexes: Iterable[RunMedia], key: str) -> list[int]:
    """Every step at which any of the runs logged ``key``, ascending (the slider's positions)."""
    steps: set[int] = set()
    for index in indexes:
        track = index.tracks.get(key)
        if track is not None:
            steps.update(track.steps.tolist())
    return sorted(steps)


def nearest_step(steps: npt.NDArray[np.int64], wanted: int) -> int | None:
    """The step of ``steps`` (sorted) closest to ``wanted``; the earlier one on a tie; None if empty."""
    if steps.size == 0:
        return None
    at = int(np.searchsorted(steps, wanted))
    if at == 0:
        return int(steps[0])
    if at == steps.size:
        return int(steps[-1])
    before, after = int(steps[at - 1]), int(steps[at])
    return before if wanted - before <= after - wanted else after


def items_at(index: RunMedia, key: str, wanted: int) -> tuple[int | None, list[Item]]:
    """The step shown for ``wanted`` (the nearest one the run has) and its items, in order."""
    track = index.tracks.get(key)
    if track is None:
        return None, []
    shown = nearest_step(track.steps, wanted)
    return shown, ([] if shown is None else track.items[shown])


def read_text(run: StoredRun, item: Item, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """The text of a text item (at most ``limit`` characters) and whether it was cut there."""
    path = inside(run.dir, item.file, run.dir / _layout.EVENTS, "path")
    with path.open("rb") as handle:
        raw = handle.read(4 * limit + 4)  # a UTF-8 character is at most 4 bytes
    text = raw.decode("utf-8", errors="replace")
    return text[:limit], len(text) > limit or len(raw) > 4 * limit


def distribution(
    histograms: Sequence[HistogramLogged],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Steps and, per step, the :data:`PERCENTILES` of its values (rows ``steps x 9``), as TensorBoard's
    distributions draw them; a step whose histogram holds no finite value is left out.

    Values are spread evenly inside each bin, so a percentile is exact to within its bin's width;
    0 and 100 are the outer edges of the first and last non-empty bins (the least and greatest finite values).
    """
    quantiles = np.asarray(PERCENTILES) / 100.0
    steps, rows = [], []
    for histogram in histograms:
        counts = np.asarray(histogram.counts, dtype=np.float64)
        edges = np.asarray(histogram.bin_edges, dtype=np.float64)
        total = float(counts.sum())
        if total <= 0 or edges.size != counts.size + 1:
            continue
        below = np.concatenate(([0.0], np.cumsum(counts)))  # values below each bin's left edge
        targets = quantiles * total
        # The bin holding each target: the first whose count reaches it (0: the first non-empty bin).
        at = np.where(
            targets > 0,
            np.searchsorted(below[1:], targets, side="left"),
            np.searchsorted(below[1:], 0.0, side="right"),
        ).clip(0, counts.size - 1)
        inside_bin = (targets - below[at]) / counts[at]
        steps.append(histogram.step)
        rows.append(edges[at] + inside_bin * (edges[at + 1] - edges[at]))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(PERCENTILES)))
    return np.asarray(steps, dtype=np.int64), np.vstack(rows)


def heatmap(
    histograms: Sequence[HistogramLogged], rows: int = 64
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Steps, ``rows`` value-bin centres over every step's range, and per step the fraction of its values
    in each value bin (``rows x steps``), each histogram's counts spread evenly inside its bins."""
    usable = [
        h
        for h in histograms
        if float(np.sum(h.counts)) > 0 and np.asarray(h.bin_edges).size == h.counts.size + 1
    ]
    if not usable:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 0))
    low = min(float(h.bin_edges[0]) for h in usable)
    high = max(float(h.bin_edges[-1]) for h in usable)
    if not high > low:
        high = low + 1.0
    grid = np.linspace(low, high, rows + 1)
    columns = []
    for histogram in usable:
        counts = np.asarray(histogram.counts, dtype=np.float64)
        cumulative = np.concatenate(([0.0], np.cumsum(counts))) / counts.sum()
        columns.append(
            np.diff(np.interp(grid, np.asarray(histogram.bin_edges, dtype=np.float64), cumulative))
        )
    steps = np.asarray([h.step for h in usable], dtype=np.int64)
    return steps, (grid[:-1] + grid[1:]) / 2, np.column_stack(columns)


def describe(item: Item) -> str:
    """A short line under an item: its shape, rows or length, from the record's ``meta``."""
    meta = item.meta
    if item.kind == "image" and isinstance(meta.get("shape"), list):
        shape = "x".join(str(part) for part in meta["shape"])
        return f"{shape} {meta.get('dtype', '')}".strip()
    if item.kind == "audio":
        rate, frames = meta.get("sample_rate"), meta.get("frames")
        if isinstance(rate, int) and isinstance(frames, int) and rate > 0:
            return f"{frames / rate:.2f} s at {rate:,} Hz"
    if item.kind == "table" and isinstance(meta.get("rows"), int):
        columns = meta.get("columns")
        return f"{meta['rows']:,} rows, {len(columns) if isinstance(columns, list) else '?'} columns"
    if item.kind == "text" and isinstance(meta.get("chars"), int):
        return f"{meta['chars']:,} characters"
    return ""
