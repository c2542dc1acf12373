"""Finding runs in a base folder, and probing each for damage: one place for the API, the CLI and the UI.

A folder whose ``metadata.json`` is missing, invalid or mistyped is not a run: :func:`scan` lists it
under ``skipped`` with the reason and goes on, so one damaged or foreign folder never hides the others.
Opening that one folder (:func:`lookup`, ``Store.run``) raises :class:`~runtel.errors.StoreCorruptError`.

Costs: :func:`scan` reads one ``metadata.json`` per folder and :func:`listing_probe` one
``summary.json``, each not again while the file is unchanged (cached in the process per file, by
inode, size and modification time), so a UI refreshing its table re-reads only what changed; the
cyclic garbage collector is paused meanwhile (:mod:`runtel.store._gcpause`), and a one-shot command
empties the caches when it ends (:func:`forget_reads`).
:func:`lookup` finds a run from folder names (``<name>_<id8>``) and reads only the folders that
match, and those with edits (a renamed run). :func:`problems` is the full damage probe of one
folder (``runtel show``, the UI's run card).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtel.errors import RunNotFoundError, RuntelError, StoreCorruptError
from runtel.store import _layout
from runtel.store._events import read_events
from runtel.store._gcpause import collector_paused
from runtel.store._metrics import point_counts
from runtel.store._metrics import problems as series_problems
from runtel.store._untrusted import finite_number, kind_of, load_object, parse_json
from runtel.store.edits import EDITS, forget_edits, read_edits
from runtel.store.query import (
    StoredRun,
    check_metadata,
    check_summary,
    metrics_dir,
    read_summary,
    run_file,
)

#: Errors a damaged run folder can raise while being read; anything else is a bug and propagates.
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntelError)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: A listing's reads: never through a final symbolic link, never blocking on a FIFO.
_READ = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_READ |= getattr(os, "O_BINARY", 0)
_HEX = re.compile(r"[0-9a-f]+")
_ID8 = re.compile(r".+_[0-9a-f]{8}")
#: ``[inode, size, mtime in ns]`` of a file, and its validated document or why it cannot be read.
_Entry = tuple[list[int], dict[str, Any] | str]
#: ``<folder>/metadata.json`` and ``<folder>/summary.json`` paths to their last read.
_metadata_cache: dict[str, _Entry] = {}
_summary_cache: dict[str, _Entry] = {}
_params_cache: dict[str, _Entry] = {}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A folder under the store that is not shown as a run, and why."""

    folder: str
    reason: str


@dataclass(slots=True)
class Listing:
    """Runs with valid metadata (oldest first), and every other folder with the reason it was left out."""

    runs: list[StoredRun] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def find(self, run_id: object) -> StoredRun | None:
        """The listed run with exactly this id: keys from a browser are trusted only after this check."""
        if not isinstance(run_id, str):
            return None
        return next((run for run in self.runs if run.id == run_id), None)

    def resolve(self, run_ids: object) -> list[StoredRun]:
        """The listed runs among ``run_ids``, in the order given; unknown or malformed ids are dropped."""
        if not isinstance(run_ids, list):
            return []
        found = [self.find(run_id) for run_id in dict.fromkeys(i for i in run_ids if isinstance(i, str))]
        return [run for run in found if run is not None]


def scan(base_dir: str | os.PathLike[str]) -> Listing:
    """Every folder directly under ``base_dir`` (hidden ones aside): a run, or a note saying why not."""
    listing = Listing()
    try:
        with os.scandir(base_dir) as entries:
            folders = sorted(entry.name for entry in entries if entry.is_dir() and entry.name[0] != ".")
    except OSError:
        return listing
    base = Path(base_dir)
    with collector_paused():
        for name in folders:
            found = _metadata(f"{base_dir}{os.sep}{name}")
            if isinstance(found, str):
                listing.skipped.append(Skipped(name, found))
            else:
                listing.runs.append(StoredRun(base / name, found))
    listing.runs.sort(key=lambda run: finite_number(run.metadata.get("start_time")))
    return listing


def lookup(base_dir: str | os.PathLike[str], key: str, *, unique: bool = False) -> StoredRun:
    """A run by folder name, full id, id prefix (8+ characters) or run name (the latest of that name).

    Names are the effective ones (renames in ``edits.jsonl`` applied). ``unique`` refuses a name that
    several runs have, listing their ids: a command that changes a run must not guess which one.
    """
    base = Path(base_dir)
    if not isinstance(key, str) or not key:
        raise RunNotFoundError(f"no run {key!r} in {base}: give a run id, 8+ character id prefix or name")
    if (
        "/" not in key
        and "\0" not in key
        and key not in (".", "..")
        and (base / key / _layout.METADATA).exists()
    ):
        return StoredRun(base / key)
    lowered = key.lower()
    if len(key) >= 8 and _HEX.fullmatch(lowered):
        by_id = _by_id(base, lowered)
        if by_id is not None:
            return by_id
    by_name = _one_named(base, key, _open(base, _name_candidates(base, key)), unique)
    if by_name is not None:
        return by_name
    return _by_reading_every_run(base, key, unique)


def count_points(run: StoredRun) -> int:
    """Whole records in the run's series files, from their sizes (exact while the run is live)."""
    return _series_sizes(run)[0]


def _series_sizes(run: StoredRun) -> tuple[int, int]:
    """``(whole records, series files ending in a torn record)`` from sizes and the series index."""
    return point_counts(metrics_dir(run.dir))


def listing_probe(run: StoredRun, status: str) -> tuple[dict[str, Any], int | None, list[str]]:
    """What a runs table needs beyond the metadata: ``(summary, points, problems met reading them)``.

    A finished run's point count comes from its summary (one file read); a live or crashed run's
    from the sizes of its series files. The full damage probe is :func:`problems`.
    """
    found: list[str] = []
    cached = _summary(str(run.dir))
    if isinstance(cached, str):
        summary: dict[str, Any] = {}
        found.append(cached)
    else:
        summary = cached
    stats = summary.get("metrics")
    if status != "running" and stats and all("count" in item for item in stats.values()):
        return summary, sum(item["count"] for item in stats.values()), found
    try:
        points, torn = _series_sizes(run)
    except READ_ERRORS as exc:
        found.append(reason(exc, run.dir))
        return summary, None, found
    if torn and status != "running":  # a live writer may be between a block and its index entries
        found.append(_torn_records(torn))
    return summary, points, found


def problems(run: StoredRun) -> list[str]:
    """What a reader had to work around, or cannot read, in this run folder, in words (empty if healthy)."""
    found: list[str] = []
    for read in (run.summary, run.params, run.artifacts):
        _note(read, found, run.dir)
    try:
        found.extend(series_problems(metrics_dir(run.dir), finished=run.status != "running"))
    except READ_ERRORS as exc:
        return [*found, reason(exc, run.dir)]
    try:
        torn_line = read_events(run_file(run.dir, _layout.EVENTS)).torn
    except READ_ERRORS as exc:
        found.append(reason(exc, run.dir))
    else:
        if torn_line is not None:
            found.append(torn_line)
    found.extend(read_edits(run.dir).problems)
    return found


def _torn_records(count: int) -> str:
    return f"{count} series file(s) end in a torn record (ignored)"


def reason(error: BaseException, run_dir: Path) -> str:
    """A damage error in words, with the file named relative to its run folder."""
    if isinstance(error, StoreCorruptError):
        path = Path(error.path)
        shown = path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else str(path)
        where = f"{shown} field {error.field!r}" if error.field is not None else shown
        return f"{where} {error.problem}"
    return f"{type(error).__name__}: {error}"


def _note(read: Any, found: list[str], run_dir: Path) -> None:
    try:
        read()
    except READ_ERRORS as exc:
        found.append(reason(exc, run_dir))


def forget_reads() -> None:
    """Empty the per-process caches of listing reads (metadata, summaries, params, edit logs).

    For a command that ends after one listing: left for the interpreter's exit, 10,000 listed runs'
    documents are walked by each of its final garbage collections first (0.35 s of ``runtel ls``).
    """
    for cache in (_metadata_cache, _summary_cache, _params_cache):
        cache.clear()
    forget_edits()


def _metadata(folder: str) -> dict[str, Any] | str:
    """The validated metadata of ``folder``, or why it is not a run; unchanged files are not re-read."""
    return _cached(
        _metadata_cache, folder, _layout.METADATA, check_metadata, "not a run folder (no metadata.json)"
    )


def _summary(folder: str) -> dict[str, Any] | str:
    """The validated summary of ``folder`` (``{}`` before the run ends), or why it cannot be read."""
    return _cached(_summary_cache, folder, _layout.SUMMARY, check_summary, {})


def listing_summary(run: StoredRun) -> dict[str, Any] | str:
    """``summary.json`` of ``run`` as a listing reads it (cached while unchanged; ``{}`` before the run
    ends), or why it cannot be read."""
    return _summary(str(run.dir))


def listing_params(run: StoredRun) -> dict[str, Any] | str:
    """``hyperparameters.json`` of ``run`` (cached while unchanged; ``{}`` before any were logged), or
    why it cannot be read: a filter over thousands of runs reads each once."""
    return _cached(_params_cache, str(run.dir), _layout.HYPERPARAMETERS, _as_is, {})


def _as_is(document: dict[str, Any], path: str) -> dict[str, Any]:
    """Hyperparameters are any JSON object: nothing further to check."""
    return document


def _cached(
    cache: dict[str, _Entry],
    folder: str,
    name: str,
    check: Callable[[dict[str, Any], str], dict[str, Any]],
    missing: dict[str, Any] | str,
) -> dict[str, Any] | str:
    """``check`` of the JSON object in ``folder/name``, re-read only when the file changed.

    Plain strings and one ``os.open`` (``O_NOFOLLOW``), ``fstat`` and ``os.read`` rather than ``Path``
    objects, ``lstat`` and ``open()``: this runs three times per folder of a listing (10,000 runs: 30,000
    files). A symbolic link is never cached (it is resolved and checked on every read); anything but a
    plain file (a folder, a FIFO: opened without blocking) is refused.
    """
    path = f"{folder}{os.sep}{name}"
    try:
        if not _NOFOLLOW and stat.S_ISLNK(os.lstat(path).st_mode):
            return _through_link(folder, name, path, check)
        descriptor = os.open(path, _READ)
    except FileNotFoundError:
        return dict(missing) if isinstance(missing, dict) else missing
    except OSError as exc:
        if exc.errno == errno.ELOOP and _NOFOLLOW:  # O_NOFOLLOW met a symbolic link
            return _through_link(folder, name, path, check)
        return f"{name} cannot be read ({exc.strerror})"
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            what = (
                "is a folder, not a file"
                if stat.S_ISDIR(info.st_mode)
                else "is not a plain file (a FIFO or a device)"
            )
            return reason(StoreCorruptError(path, None, what), Path(folder))
        stamp = [info.st_ino, info.st_size, info.st_mtime_ns]
        entry = cache.get(path)
        if entry is None or entry[0] != stamp:
            entry = (stamp, _checked_document(_read_all(descriptor, info.st_size), path, folder, check))
            cache[path] = entry
    except OSError as exc:
        return f"{name} cannot be read ({exc.strerror})"
    finally:
        os.close(descriptor)
    return dict(entry[1]) if isinstance(entry[1], dict) else entry[1]


def _read_all(descriptor: int, size: int) -> bytes:
    """The whole file: ``size`` bytes in one read, and on to the end if it grew meanwhile."""
    data = os.read(descriptor, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    while chunk := os.read(descriptor, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


def _checked_document(
    raw: bytes, path: str, folder: str, check: Callable[[dict[str, Any], str], dict[str, Any]]
) -> dict[str, Any] | str:
    try:
        document = parse_json(raw, path)
        if not isinstance(document, dict):
            raise StoreCorruptError(path, None, f"holds {kind_of(document)}, not a JSON object")
        return check(document, path)
    except StoreCorruptError as exc:
        return reason(exc, Path(folder))


def _through_link(
    folder: str, name: str, path: str, check: Callable[[dict[str, Any], str], dict[str, Any]]
) -> dict[str, Any] | str:
    """A file that is a symbolic link: followed only while it stays inside the run folder, not cached."""
    try:
        return check(load_object(run_file(Path(folder), name)), path)
    except StoreCorruptError as exc:
        return reason(exc, Path(folder))


def _by_id(base: Path, key: str) -> StoredRun | None:
    """The run whose id is or starts with ``key``, among folders ending in ``_<key[:8]>`` only."""
    suffix = f"_{key[:8]}"
    folders = _folders(base, lambda name: name.endswith(suffix))
    damage: StoreCorruptError | None = None
    matches: list[StoredRun] = []
    for folder in folders:
        try:
            run = StoredRun(base / folder)
        except StoreCorruptError as exc:
            damage = exc
            continue
        if run.id == key:
            return run
        if run.id.startswith(key):
            matches.append(run)
    if len(matches) > 1:
        raise RunNotFoundError(
            f"id prefix {key!r} matches {len(matches)} runs in {base} "
            f"({', '.join(run.id for run in matches)}); give more characters"
        )
    if matches:
        return matches[0]
    if damage is not None:
        raise damage
    return None


def _name_candidates(base: Path, name: str) -> list[str]:
    """Folders ``<slug>_<id8>`` whose slug is what :func:`_layout.folder_name` makes of ``name``, and
    every folder with an ``edits.jsonl`` (a rename keeps the folder of the old name)."""
    prefix = _layout.folder_name(name, "")
    return _folders(
        base,
        lambda folder: (
            (folder.startswith(prefix) and len(folder) == len(prefix) + 8)
            or os.path.lexists(f"{base}{os.sep}{folder}{os.sep}{EDITS}")
        ),
    )


def _one_named(base: Path, name: str, runs: list[StoredRun], unique: bool) -> StoredRun | None:
    """The latest of ``runs`` whose effective name is ``name``; with ``unique``, an error when several are."""
    named = [run for run in runs if run.name == name]
    if unique and len(named) > 1:
        raise RunNotFoundError(
            f"{len(named)} runs in {base} are named {name!r} "
            f"({', '.join(run.id for run in named)}): give the id of the one to change"
        )
    return _latest(named)


def _folders(base: Path, wanted: Any) -> list[str]:
    """Run folders whose names ``wanted`` accepts: one listing of ``base``, filtered by name first (a
    string test per entry), so only the few candidates are checked further and stat'ed."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    # os.path.isdir: a candidate that cannot be examined (no permission) is skipped, not raised
    candidates = (name for name in filter(wanted, names) if _ID8.fullmatch(name))
    return sorted(name for name in candidates if os.path.isdir(base / name))


def _open(base: Path, folders: list[str]) -> list[StoredRun]:
    runs = []
    for folder in folders:
        try:
            runs.append(StoredRun(base / folder))
        except StoreCorruptError:
            continue
    return runs


def _latest(runs: list[StoredRun]) -> StoredRun | None:
    if not runs:
        return None
    return max(runs, key=lambda run: finite_number(run.metadata.get("start_time")))


def _by_reading_every_run(base: Path, key: str, unique: bool = False) -> StoredRun:
    """Folders renamed or written by other tools: the same rules over every readable run."""
    runs = scan(base).runs
    for run in runs:
        if key in (run.id, run.dir.name):
            return run
    if len(key) >= 8:
        prefixed = [run for run in runs if run.id.startswith(key)]
        if len(prefixed) == 1:
            return prefixed[0]
    named = _one_named(base, key, runs, unique)
    if named is not None:
        return named
    raise RunNotFoundError(f"no run {key!r} in {base} ({len(runs)} runs there)")


def summary_of(run: StoredRun) -> dict[str, Any]:
    """``summary.json`` of ``run``, or ``{}`` when it is damaged (:func:`problems` says how)."""
    try:
        return read_summary(run.dir)
    except READ_ERRORS:
        return {}
