"""Editing a run after the fact: tags, a note and the display name, appended to ``edits.jsonl``.

Why a file of its own, only ever appended to, rather than a change to ``metadata.json``: a live run's
writer rewrites ``metadata.json`` from its in-memory copy at every heartbeat (write a temporary file,
rename it over), so a change another process made there would be gone seconds later; and it writes
``events.jsonl`` at the offset of its last committed line (not ``O_APPEND``), so a line appended by
someone else would be overwritten. Making the writer re-read under a lock would put file locking on
its path and trust every writer version to take it. Instead, editors alone write ``edits.jsonl``:

- each edit is one ``run_edited`` line (the ``events.jsonl`` format of :class:`~runtel.records.RunEdited`:
  time, host, pid, user, tags added and removed, note, name), written with one ``write`` on an
  ``O_APPEND`` descriptor under an exclusive ``flock`` and fsynced, so concurrent editors never
  interleave; a torn last line (an editor killed mid-write) is cut by the next editor, under the lock;
- an edit is a change (tags added or removed), never a whole state, so two editors cannot undo each
  other, and the writer never sees the file;
- readers compute the effective tags, note and name as ``metadata.json`` plus every edit in order
  (:func:`with_edits`). The file is untrusted input like every other: a line that is not a valid edit
  is skipped and named by :func:`read_edits` (``runtel show`` lists it), the others still apply.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import getpass
import os
import platform
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtel._values import check_name, encodable
from runtel.errors import InvalidNameError, InvalidParamError, RuntelError, StoreCorruptError, StoreWriteError
from runtel.records import RunEdited, edited_tags
from runtel.store._events import parse_line, to_line
from runtel.store._untrusted import scan_document

try:
    import fcntl
except ImportError:  # Windows: O_APPEND alone keeps one write whole
    fcntl = None  # type: ignore[assignment]

EDITS = "edits.jsonl"
#: An edits file larger than this is not read (a crafted or runaway file); appending past it is refused.
MAX_EDITS_BYTES = 4 * 2**20
#: Longest note (characters): a few paragraphs, never a log; within every backend's limit for the
#: field it goes to (MLflow's tag values, W&B notes, Neptune's ``sys/description``), so none cuts it.
MAX_NOTE_CHARS = 5000

_APPEND = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class EditLog:
    """The valid edits of one run, in order, and what was wrong with the lines left out."""

    edits: tuple[RunEdited, ...] = ()
    problems: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------------------- checking
def check_tag(tag: object) -> str:
    """``tag`` if it is a usable tag (the rules of metric names); InvalidNameError naming it otherwise."""
    return _checked_tag(tag) if type(tag) is str else check_name(tag, "tag")


@functools.lru_cache(maxsize=4096)
def _checked_tag(tag: str) -> str:
    """Tags repeat across runs (``baseline`` on hundreds): a listing checks each text once."""
    return check_name(tag, "tag")


def check_run_name(name: object) -> str:
    """``name`` if it is a usable display name; InvalidNameError naming it otherwise."""
    return _checked_run_name(name) if type(name) is str else check_name(name, "run")


@functools.lru_cache(maxsize=4096)
def _checked_run_name(name: str) -> str:
    """A listing checks the name of every renamed run; names repeat (``baseline``), so each once."""
    return check_name(name, "run")


def check_note(note: object) -> str:
    """``note`` if it is storable free text (newlines welcome); InvalidParamError naming the problem."""
    if not isinstance(note, str):
        raise InvalidParamError(f"a note must be a str, got {type(note).__name__} {note!r:.60}")
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidParamError(
            f"the note {note[:40]!r}... is {len(note)} characters; the limit is {MAX_NOTE_CHARS} "
            "(store longer text as an artifact)"
        )
    if "\0" in note or not encodable(note):
        raise InvalidParamError(
            f"the note {note[:40]!r} contains a NUL or a lone surrogate and cannot be stored as UTF-8 text"
        )
    return note


def make_edit(
    *,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    note: str | None = None,
    name: str | None = None,
) -> RunEdited:
    """A checked edit stamped with who and when; refused when it changes nothing or contradicts itself."""
    added = tuple(dict.fromkeys(check_tag(tag) for tag in _strings(add, "tags to add")))
    removed = tuple(dict.fromkeys(check_tag(tag) for tag in _strings(remove, "tags to remove")))
    both = sorted(set(added) & set(removed))
    if both:
        raise InvalidNameError(f"tag(s) {', '.join(map(repr, both))} both added and removed in one edit")
    edit = RunEdited(
        time=time.time(),
        tags_added=added,
        tags_removed=removed,
        note=None if note is None else check_note(note),
        name=None if name is None else check_run_name(name),
        host=platform.node(),
        pid=os.getpid(),
        user=_user(),
    )
    if not (added or removed or edit.note is not None or edit.name is not None):
        raise InvalidParamError("nothing to change: give tags to add or remove, a note or a name")
    return edit


def what_changes(edit: RunEdited, effective: dict[str, Any]) -> RunEdited | None:
    """``edit`` less what ``effective`` (the run's metadata with its edits) already is, or None when
    nothing is left: a loop adding the same tag every epoch writes nothing, and never fills the file."""
    tags = set(effective.get("tags") or ())
    changes = replace(
        edit,
        tags_added=tuple(tag for tag in edit.tags_added if tag not in tags),
        tags_removed=tuple(tag for tag in edit.tags_removed if tag in tags),
        note=None if edit.note == effective.get("note") else edit.note,
        name=None if edit.name == effective.get("name") else edit.name,
    )
    if changes.tags_added or changes.tags_removed or changes.note is not None or changes.name is not None:
        return changes
    return None


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):  # "baseline" would otherwise be eight one-letter tags
        return [values]
    try:
        return list(values)
    except TypeError:
        raise InvalidParamError(f"{what} must be a str or an iterable of str, got {values!r:.60}") from None


def _user() -> str | None:
    with contextlib.suppress(Exception):  # no login name in some containers
        return getpass.getuser()
    return None


# ---------------------------------------------------------------------------------------- writing
def append_edit(run_dir: Path, edit: RunEdited) -> None:
    """Append ``edit`` to the run's ``edits.jsonl``: whole, once, and on disk when this returns."""
    path = run_dir / EDITS
    line = (to_line(edit) + "\n").encode("utf-8")
    if not (run_dir / "metadata.json").is_file():
        raise StoreWriteError(f"{run_dir} is no run folder (moved?)", path=str(path), errno=None)
    try:
        fd = os.open(path, _APPEND, 0o644)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreWriteError(f"{path} is not a plain file; not written", path=str(path), errno=None)
        size = info.st_size
        if size + len(line) > MAX_EDITS_BYTES:
            raise StoreWriteError(
                f"{path} holds {size} bytes of edits; one more would pass the {MAX_EDITS_BYTES}-byte limit "
                "(runs are not edited that often: check what keeps editing this run)",
                path=str(path),
                errno=None,
            )
        _cut_torn_tail(fd, size)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    finally:
        os.close(fd)  # releases the lock


def _cut_torn_tail(fd: int, size: int) -> None:
    """Cut a last line without its newline (an editor killed mid-write)."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)


def _write_error(exc: OSError, path: Path) -> StoreWriteError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    message = f"runtel cannot record the edit in {path}: {reason}"
    return StoreWriteError(message, path=str(path), errno=exc.errno)


# ---------------------------------------------------------------------------------------- reading
#: ``path -> ([inode, size, mtime in ns], log)``: a listing of thousands of runs re-reads only what changed.
_cache: dict[str, tuple[list[int], EditLog]] = {}


#: What a never-edited run reads (most runs): one shared, immutable log.
_NO_EDITS = EditLog()
_NOT_PLAIN = EditLog((), (f"{EDITS} is not a plain file (a link or a folder): its edits are not applied",))
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: A reader's open: never through a final symbolic link, never blocking on a FIFO.
_READ = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)  # a terminal device put there never becomes ours
)
#: What opening something other than a file can answer: a socket (ENXIO), a device without a driver.
_NOT_OPENABLE = {errno.ENXIO, errno.ENODEV, getattr(errno, "EOPNOTSUPP", errno.ENXIO)}
_READ |= getattr(os, "O_BINARY", 0)


def read_edits(run_dir: Path) -> EditLog:
    """Every valid edit of the run, in order, and what was wrong with each line left out.

    A plain string path and one ``os.open`` (``O_NOFOLLOW``, never blocking on a FIFO), ``fstat`` and
    ``os.read``: this runs once per folder of a listing, where ``lstat`` and ``open()`` cost more than
    the read. Anything but a plain file is refused, its edits not applied.
    """
    path = f"{run_dir}{os.sep}{EDITS}"
    try:
        if not _NOFOLLOW and stat.S_ISLNK(os.lstat(path).st_mode):
            return _NOT_PLAIN
        descriptor = os.open(path, _READ)
    except FileNotFoundError:
        return _NO_EDITS
    except OSError as exc:
        if (exc.errno == errno.ELOOP and _NOFOLLOW) or exc.errno in _NOT_OPENABLE:  # a link, a socket
            return _NOT_PLAIN
        return EditLog((), (f"{EDITS} cannot be read ({exc.strerror})",))
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return _NOT_PLAIN
        if info.st_size > MAX_EDITS_BYTES:
            too_big = f"{EDITS} is {info.st_size} bytes, over the {MAX_EDITS_BYTES}-byte limit: not read"
            return EditLog((), (too_big,))
        stamp = [info.st_ino, info.st_size, info.st_mtime_ns]
        cached = _cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        raw = _read_all(descriptor, info.st_size, min(info.st_size + 4096, MAX_EDITS_BYTES))
    except OSError as exc:
        return EditLog((), (f"{EDITS} cannot be read ({exc.strerror})",))
    finally:
        os.close(descriptor)
    log = _parse(raw, path)
    _cache[path] = (stamp, log)
    return log


def _read_all(descriptor: int, size: int, limit: int) -> bytes:
    """The file's ``size`` bytes and what it grew since (up to ``limit``): one read on a local disk,
    more where a network or FUSE file system answers in pieces."""
    chunks = [os.read(descriptor, limit)]
    got = len(chunks[0])
    while chunks[-1] and got < min(size, limit):
        chunks.append(os.read(descriptor, limit - got))
        got += len(chunks[-1])
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def forget_edits() -> None:
    """Empty the cache of edit logs read (see :func:`runtel.store.scan.forget_reads`)."""
    _cache.clear()


def _parse(raw: bytes, path: str) -> EditLog:
    lines = raw.split(b"\n")
    tail = lines.pop()
    edits: list[RunEdited] = []
    problems = [f"{EDITS} ends in a torn line of {len(tail)} bytes (ignored)"] if tail else []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = _quick(line) or parse_line(line, Path(path), number)  # names what is wrong
            if not isinstance(record, RunEdited):
                raise StoreCorruptError(path, f"line {number}: type", "is not run_edited")
            edits.append(_checked(record, path, number))
        except StoreCorruptError as exc:
            where = f" field {exc.field!r}" if exc.field is not None else ""
            problems.append(f"{EDITS}{where} {exc.problem} (that edit is not applied)")
    return EditLog(tuple(edits), tuple(problems))


#: The keys of a well-formed ``run_edited`` line; one with any other goes to the full parser.
_QUICK_KEYS = frozenset({"type", "time", "tags_added", "tags_removed", "note", "name", "host", "pid", "user"})
_NUMBER = (float, int)
_TEXT_OR_NULL = (str, type(None))


def _quick(line: bytes) -> RunEdited | None:
    """The edit of a well-formed line, its exact JSON types checked at C speed (a listing of 10,000
    edited runs parses every line), else None: the full parser then names what is wrong."""
    try:
        text = line.decode("utf-8")
        document, end = scan_document(text, 0)
    except (StopIteration, ValueError, RecursionError):  # UnicodeDecodeError included
        return None
    if (
        end != len(text)
        or type(document) is not dict
        or document.get("type") != "run_edited"
        or not _QUICK_KEYS.issuperset(document)
    ):
        return None
    get = document.get
    when, added, removed = get("time"), get("tags_added", []), get("tags_removed", [])
    note, name, host, pid, user = get("note"), get("name"), get("host", ""), get("pid", 0), get("user")
    if (
        type(when) not in _NUMBER
        or type(added) is not list
        or type(removed) is not list
        or type(note) not in _TEXT_OR_NULL
        or type(name) not in _TEXT_OR_NULL
        or type(host) is not str
        or type(pid) is not int
        or type(user) not in _TEXT_OR_NULL
    ):
        return None
    for tags in (added, removed):
        for tag in tags:
            if type(tag) is not str:
                return None
    return RunEdited(document["time"], tuple(added), tuple(removed), note, name, host, pid, user)


def _checked(edit: RunEdited, path: str, number: int) -> RunEdited:
    """The values the API would have accepted, and nothing else: a crafted line is refused whole."""
    try:
        for tag in (*edit.tags_added, *edit.tags_removed):
            check_tag(tag)
        if edit.note is not None:
            check_note(edit.note)
        if edit.name is not None:
            check_run_name(edit.name)
    except RuntelError as exc:
        raise StoreCorruptError(path, f"line {number}", f"holds a value the API refuses: {exc}") from None
    return edit


def with_edits(run_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with the run's effective ``tags``, ``note`` and ``name`` (itself when never edited).

    ``original_name`` keeps the name the run was started with, and ``edited`` the time of the last edit.
    """
    edits = read_edits(run_dir).edits
    if not edits:
        return metadata
    return apply_edits(metadata, edits)


def apply_edits(metadata: dict[str, Any], edits: Sequence[RunEdited]) -> dict[str, Any]:
    """``metadata`` (validated) updated by ``edits`` in order, as a new dict."""
    effective = dict(metadata)
    tags = tuple(metadata.get("tags") or ())
    for edit in edits:
        tags = edited_tags(tags, edit)
        if edit.note is not None:
            effective["note"] = edit.note
        if edit.name is not None:
            effective.setdefault("original_name", metadata.get("name"))
            effective["name"] = edit.name
    effective["tags"] = list(tags)
    effective["edited"] = edits[-1].time
    return effective


# ---------------------------------------------------------------------------------------- the API
class Tags(Set[str]):
    """The run's current tags, as a set that records ``add``/``remove`` as edits (order kept for display).

    Reading re-reads the run, so another process's edit shows; ``add``/``remove`` are written before they
    return, and adding a tag the run has (or removing one it lacks) is a no-op, like a set's.
    """

    def __init__(self, current: Callable[[], tuple[str, ...]], record: Callable[[RunEdited], None]) -> None:
        self._current = current
        self._record = record

    def __contains__(self, tag: object) -> bool:
        return tag in self._current()

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"Tags({list(self._current())!r})"

    def add(self, *tags: str) -> None:
        """Add one or more tags."""
        self.update(add=tags)

    def remove(self, *tags: str) -> None:
        """Remove one or more tags (a tag the run does not have is no error)."""
        self.update(remove=tags)

    discard = remove

    def update(self, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Add and remove in one edit (one line, one record)."""
        self._record(make_edit(add=add, remove=remove))
