"""Versioned artifact store of one run: checksummed copies, numbered 1, 2, ..., identical content kept once.

Layout under the run folder::

    artifacts.json                          every version of every name (relative paths)
    artifacts/<name>                        the latest version
    versions/<name>/v<N>_<base>             version N (a file, or a directory tree)
    versions/<name>/v<N>_<base>.manifest.json   per-file hashes of a directory version
    versions/.blobs/<sha256>                each distinct file content, once

``<base>`` is the last ``/``-separated part of the name, so the default name of ``checkpoint.pt`` gives
``versions/checkpoint.pt/v3_checkpoint.pt``. Version files and the latest copy are hard links to the
blobs, so logging the same bytes again costs no disk space; blobs are made read-only so that writing
into ``artifacts/<name>`` cannot silently change every version sharing it. Where the file system has
no hard links, each place gets its own copy instead (correct, but without the space saving).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any, NoReturn

from runtel._values import encodable
from runtel.errors import ArtifactError, ChecksumMismatchError, StoreCorruptError
from runtel.store import _portable
from runtel.store._jsonio import _fallback, write_json_atomic
from runtel.store._untrusted import INTEGER, OBJECT, TEXT, Kind, inside, load_json, load_object
from runtel.store._untrusted import field as check_field

if TYPE_CHECKING:
    from runtel.records import ArtifactLogged

CHUNK_SIZE = 1 << 20
MAX_NAME_LENGTH = 255
_BLOBS = ".blobs"
_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_INDEX_FIELDS: dict[str, Kind] = {
    "name": TEXT,
    "version": INTEGER,
    "checksum": TEXT,
    "size": INTEGER,
    "created_at": TEXT,
    "path": TEXT,
    "step": INTEGER,
    "kind": TEXT,
    "metadata": OBJECT,
}
_REQUIRED_INDEX_FIELDS = ("name", "version", "checksum", "size", "created_at", "path")


@dataclass(frozen=True, slots=True)
class ArtifactVersion:
    """One stored version; ``path`` is absolute, ``checksum`` the hex SHA-256 checked by ``get``."""

    name: str
    version: int
    checksum: str
    size: int
    created_at: str
    path: str
    step: int | None = None
    kind: str = "artifact"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "checksum": self.checksum,
            "size": self.size,
            "created_at": self.created_at,
            "path": self.path,
            "step": self.step,
            "kind": self.kind,
            "metadata": dict(self.metadata),
        }

    def logged(self, when: float) -> ArtifactLogged:
        """The record that tells the exporters (and ``events.jsonl``) this version was logged at ``when``."""
        from runtel.records import ArtifactLogged

        return ArtifactLogged(
            name=self.name,
            version=self.version,
            sha256=self.checksum,
            size=self.size,
            path=self.path,
            time=when,
            step=self.step,
            kind=self.kind,
            metadata=self.metadata,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactVersion:
        return cls(
            name=data["name"],
            version=int(data["version"]),
            checksum=data["checksum"],
            size=int(data["size"]),
            created_at=data["created_at"],
            path=data["path"],
            step=data.get("step"),
            kind=data.get("kind", "artifact"),
            metadata=dict(data.get("metadata") or {}),
        )


class ArtifactStore:
    """Reads and extends the artifacts of the run in ``run_dir``; re-opening continues the numbering.

    Nothing is written until the first ``add``, so opening a finished run to read it changes nothing.
    One lock serialises ``add`` calls (numbering, blobs and ``artifacts.json``); several processes
    must not add to the same run at once.
    """

    def __init__(self, run_dir: Path, *, fsync: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.index_path = self.run_dir / "artifacts.json"
        self.versions_dir = self.run_dir / "versions"
        self.latest_dir = self.run_dir / "artifacts"
        self._blobs = self.versions_dir / _BLOBS
        self._fsync = fsync
        self._lock = threading.Lock()
        self._name_max = _portable.name_max(self.run_dir)
        self._versions = self._read_index()

    def add(
        self,
        source: str | os.PathLike[str],
        name: str | None = None,
        *,
        version: bool = True,
        step: int | None = None,
        kind: str = "artifact",
        metadata: dict[str, Any] | None = None,
    ) -> ArtifactVersion:
        """Copy ``source`` (a file or directory) now, so the caller may overwrite it as soon as this returns.

        ``name`` defaults to the source's file name and may use ``/`` to group (``models/best.pt``).
        ``version=False`` keeps a single version: earlier versions of the name are replaced by this one.
        """
        source_path = Path(os.path.abspath(source))
        name = source_path.name if name is None else name
        parts = self._check_name(name)
        _check_metadata(name, metadata)
        try:
            source_mode = source_path.stat().st_mode
        except OSError as exc:
            raise ArtifactError(
                f"artifact source {str(source_path)!r} does not exist or cannot be read"
            ) from exc
        if not (stat.S_ISREG(source_mode) or stat.S_ISDIR(source_mode)):
            raise ArtifactError(
                f"artifact source {str(source_path)!r} is neither a regular file nor a directory"
            )
        if stat.S_ISDIR(source_mode) and self.run_dir.resolve().is_relative_to(source_path.resolve()):
            raise ArtifactError(f"artifact source {str(source_path)!r} contains the run folder itself")
        tree = _tree_files(source_path) if stat.S_ISDIR(source_mode) else None  # checked before writing
        with self._lock:
            self._check_nesting(name)
            previous = self._versions.get(name, []) if version else []
            number = len(previous) + 1
            final = self.versions_dir.joinpath(*parts, f"v{number}_{parts[-1]}")
            final.parent.mkdir(parents=True, exist_ok=True)
            self._blobs.mkdir(exist_ok=True)
            if tree is not None:
                checksum, size = self._store_tree(source_path, tree, final)
            else:
                checksum, size = self._store_file(source_path, final)
            _link_into_place(final, self.latest_dir.joinpath(*parts))
            record = ArtifactVersion(
                name=name,
                version=number,
                checksum=checksum,
                size=size,
                created_at=datetime.now(timezone.utc).isoformat(),
                path=str(final),
                step=step,
                kind=kind,
                metadata=dict(metadata or {}),
            )
            dropped = self._versions.get(name, [])[len(previous) :]
            self._versions[name] = [*previous, record]
            self._write_index()
            if dropped:
                self._discard(dropped, keep=final)
            return record

    def names(self) -> list[str]:
        """Every artifact name logged to this run, sorted."""
        with self._lock:
            return sorted(self._versions)

    def versions(self, name: str) -> list[ArtifactVersion]:
        """All versions of ``name``, oldest first."""
        with self._lock:
            if name not in self._versions:
                known = ", ".join(repr(n) for n in sorted(self._versions)) or "none yet"
                raise ArtifactError(f"no artifact named {name!r} in this run; known names: {known}")
            return list(self._versions[name])

    def get(self, name: str, version: int = -1, *, verify: bool = True) -> ArtifactVersion:
        """Version ``version`` of ``name`` (1 = first, -1 = latest, negatives index from the end).

        With ``verify`` the stored bytes are hashed again; a changed, truncated or missing file raises
        ``ChecksumMismatchError`` naming it, so a caller never loads a damaged checkpoint unknowingly.
        """
        history = self.versions(name)
        count = len(history)
        if not (1 <= version <= count or -count <= version <= -1):
            raise ArtifactError(
                f"artifact {name!r} has versions 1..{count}; version={version} is out of range "
                f"(use 1..{count}, or -1 for the latest)"
            )
        record = history[version - 1 if version > 0 else version]
        if verify:
            _verify(record)
        return record

    def _check_name(self, name: str) -> list[str]:
        """The name's parts, or ``ArtifactError`` before anything is written: names become paths."""
        parts = name.split("/") if isinstance(name, str) else []
        rule = _name_rule(name, parts, self._name_max)
        if rule is None:
            for root in (self.versions_dir, self.latest_dir):
                if not root.joinpath(*parts).resolve().is_relative_to(self.run_dir.resolve()):
                    rule = "it resolves outside the run folder (a symbolic link in the way?)"
        if rule is not None:
            raise ArtifactError(
                f"unsafe artifact name {name!r}: {rule}; "
                "use a relative name such as 'model.pt' or 'models/best.pt'"
            )
        return parts

    def _check_nesting(self, name: str) -> None:
        """``a`` and ``a/b`` cannot both exist: ``artifacts/a`` would have to be a file and a folder.
        Nor can ``Model.pt`` and ``model.pt``, or ``é`` composed and decomposed (NFC, NFD): on macOS
        and Windows they would be one folder."""
        folded = _portable.collision_key(name)
        for other in self._versions:
            if other == name:
                continue
            theirs = _portable.collision_key(other)
            if theirs == folded:
                raise ArtifactError(
                    f"artifact name {name!r} differs from existing artifact {other!r} only in case or "
                    "Unicode normalisation (NFC/NFD); macOS and Windows would store both in one folder"
                )
            if theirs.startswith(folded + "/") or folded.startswith(theirs + "/"):
                raise ArtifactError(
                    f"artifact name {name!r} clashes with existing artifact {other!r}: "
                    "one name cannot be a folder of another; pick a different name"
                )

    def _store_file(self, source: Path, final: Path) -> tuple[str, int]:
        blob, size = self._copy_to_blob(source)
        _link_into_place(blob, final)
        _manifest_path(final).unlink(missing_ok=True)  # left by a folder this file replaces
        return blob.name, size

    def _store_tree(self, source: Path, tree: list[Path], final: Path) -> tuple[str, int]:
        """Build the tree in a hidden folder beside ``final``, then rename it: never half a tree there."""
        staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        entries: list[dict[str, Any]] = []
        try:
            for relative in tree:
                blob, size = self._copy_to_blob(source / relative)
                _link_into_place(blob, staging.joinpath(*relative.parts))
                entries.append({"path": relative.as_posix(), "sha256": blob.name, "size": size})
            staging.mkdir(exist_ok=True)
            write_json_atomic(_manifest_path(final), entries, fsync=self._fsync)
            _replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return _manifest_checksum(entries), sum(entry["size"] for entry in entries)

    def _copy_to_blob(self, source: Path) -> tuple[Path, int]:
        """Stream ``source`` into a temporary blob while hashing it; keep it only if the content is new."""
        fd, name = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self._blobs)
        tmp = Path(name)
        try:
            digest = hashlib.sha256()
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            size = 0
            with os.fdopen(fd, "wb") as out:
                try:
                    handle = source.open("rb")
                except OSError as exc:
                    raise ArtifactError(f"artifact source {str(source)!r} cannot be read: {exc}") from exc
                with handle:
                    while count := handle.readinto(buffer):
                        digest.update(view[:count])
                        out.write(view[:count])
                        size += count
                if self._fsync:
                    out.flush()
                    os.fsync(out.fileno())
            blob = self._blobs / digest.hexdigest()
            if not (blob.is_file() and blob.stat().st_size == size):
                tmp.chmod(0o444)
                os.replace(tmp, blob)
            return blob, size
        finally:
            tmp.unlink(missing_ok=True)

    def _read_index(self) -> dict[str, list[ArtifactVersion]]:
        """``artifacts.json`` checked field by field: it names files that export sends elsewhere."""
        path = self.index_path
        if path.is_symlink():
            inside(self.run_dir, path.name, path, "path")
        artifacts = load_object(path).get("artifacts", {})
        if not isinstance(artifacts, dict):
            raise StoreCorruptError(path, "artifacts", "is not a JSON object of name to versions")
        versions: dict[str, list[ArtifactVersion]] = {}
        for name, items in artifacts.items():
            if not isinstance(items, list):
                raise StoreCorruptError(path, f"artifacts: {name}", "is not a JSON array of versions")
            versions[name] = [self._from_index(name, number, item) for number, item in enumerate(items, 1)]
        return versions

    def _from_index(self, name: str, number: int, item: object) -> ArtifactVersion:
        path, label = self.index_path, f"artifacts: {name}: {number}"
        if not isinstance(item, dict):
            raise StoreCorruptError(path, label, "is not a JSON object")
        for key, kind in _INDEX_FIELDS.items():
            check_field(
                item, key, kind, path, required=key in _REQUIRED_INDEX_FIELDS, label=f"{label}: {key}"
            )
        if item["name"] != name or item["version"] != number:
            raise StoreCorruptError(path, label, f"holds {item['name']!r} v{item['version']}, not v{number}")
        if not _SHA256.fullmatch(item["checksum"]):
            raise StoreCorruptError(path, f"{label}: checksum", "is not a hex SHA-256")
        located = inside(self.run_dir, item["path"], path, f"{label}: path")
        if not located.is_relative_to(self.versions_dir.resolve()):
            raise StoreCorruptError(path, f"{label}: path", f"{item['path']!r} is not under versions/")
        return ArtifactVersion.from_dict({**item, "path": str(located)})

    def _write_index(self) -> None:
        document = {
            "format": _FORMAT,
            "artifacts": {
                name: [
                    {**record.to_dict(), "path": Path(record.path).relative_to(self.run_dir).as_posix()}
                    for record in records
                ]
                for name, records in self._versions.items()
            },
        }
        write_json_atomic(self.index_path, document, fsync=self._fsync)

    def _discard(self, dropped: list[ArtifactVersion], keep: Path) -> None:
        """Remove versions replaced by ``version=False`` and the blobs nothing links to any more."""
        for record in dropped:
            path = Path(record.path)
            if path == keep:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            _manifest_path(path).unlink(missing_ok=True)
        for blob in self._blobs.iterdir():
            if not blob.name.startswith(".") and blob.stat().st_nlink == 1:
                blob.unlink()


def check_artifact_name(name: object) -> list[str]:
    """The parts of a safe relative name such as ``models/best.pt``; ``ArtifactError`` otherwise."""
    parts = name.split("/") if isinstance(name, str) else []
    rule = _name_rule(name, parts)
    if rule is not None:
        raise ArtifactError(
            f"unsafe artifact name {name!r}: {rule}; "
            "use a relative name such as 'model.pt' or 'models/best.pt'"
        )
    return parts


def _check_metadata(name: str, metadata: dict[str, Any] | None) -> None:
    """Refuse metadata ``artifacts.json`` could not hold, before any file is copied."""
    try:
        json.dumps(metadata, ensure_ascii=False, default=_fallback).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(
            f"artifact {name!r}: its metadata cannot be stored as JSON ({type(exc).__name__}: {exc}); "
            "pass a tree of str, numbers, bools and None whose strings are valid Unicode"
        ) from None


def _name_rule(name: object, parts: list[str], name_max: int = _portable.DEFAULT_NAME_MAX) -> str | None:
    """The first rule ``name`` breaks, in words, or None when it is safe."""
    if not isinstance(name, str):
        return f"it must be a str, not {type(name).__name__}"
    if not name:
        return "it is empty"
    if not encodable(name):
        return "it contains a lone surrogate, which cannot be stored as UTF-8"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long, the limit is {MAX_NAME_LENGTH}"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "it contains a NUL or other control character"
    if "\\" in name:
        return "it contains a backslash; separate groups with '/'"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return "it is an absolute path or starts with a drive"
    if ".." in parts:
        return "it contains a '..' component"
    if "." in parts:
        return "it contains a '.' component"
    if "" in parts:
        return "it has an empty component ('//' or a trailing '/')"
    if parts[0] == _BLOBS:
        return f"{_BLOBS!r} is reserved for the store's content blobs"
    return next(filter(None, (_portable.part_rule(part, name_max) for part in parts)), None)


def _tree_files(root: Path) -> list[Path]:
    """Regular files under ``root``, relative and sorted by POSIX path.

    Links to files count as their content; links to folders are not followed (they could loop), and
    empty folders are not kept: a directory artifact is the set of its files.
    """
    found: list[Path] = []
    for folder, _, files in os.walk(root, onerror=_raise_unreadable):
        for file_name in files:
            path = Path(folder, file_name)
            if not path.is_file():
                raise ArtifactError(
                    f"artifact source {str(path)!r} is not a regular file (broken link, pipe?)"
                )
            relative = path.relative_to(root)
            if not encodable(str(relative)):
                raise ArtifactError(
                    f"artifact source file {str(path)!r} has a name that is not valid UTF-8 (undecodable "
                    "bytes); the manifest cannot record it: rename it"
                )
            found.append(relative)
    return sorted(found, key=lambda path: path.as_posix())


def _raise_unreadable(error: OSError) -> NoReturn:
    raise ArtifactError(
        f"artifact source folder {error.filename!r} cannot be read: {error.strerror}"
    ) from error


def _manifest_checksum(entries: list[dict[str, Any]]) -> str:
    """SHA-256 of the canonical manifest: sorted relative POSIX paths with each file's hash and size."""
    canonical = json.dumps(entries, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    size = 0
    with path.open("rb") as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def _verify(record: ArtifactVersion) -> None:
    path = Path(record.path)
    if path.is_dir():
        _verify_tree(record, path)
        return
    try:
        actual, _ = _hash_file(path)
    except FileNotFoundError:
        actual = "missing"
    if actual != record.checksum:
        raise ChecksumMismatchError(
            f"artifact {record.name!r} v{record.version} at {str(path)!r} is damaged: "
            f"expected sha256 {record.checksum}, found {actual}"
        )


def _verify_tree(record: ArtifactVersion, path: Path) -> None:
    """Hash every file of a directory version and name the first one that differs from the manifest."""
    manifest = _manifest_path(path)
    expected = load_json(manifest, default=[])
    if not isinstance(expected, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and isinstance(entry.get("sha256"), str)
        for entry in expected
    ):
        raise StoreCorruptError(manifest, None, "is not a list of {path, sha256, size} entries")
    stored = {entry["path"]: entry["sha256"] for entry in expected}
    entries: list[dict[str, Any]] = []
    for relative in _tree_files(path):
        key = relative.as_posix()
        sha, size = _hash_file(path / relative)
        if key not in stored:
            raise ChecksumMismatchError(
                f"artifact {record.name!r} v{record.version}: unexpected file {key!r}"
            )
        if sha != stored[key]:
            raise ChecksumMismatchError(
                f"artifact {record.name!r} v{record.version}: file {str(path / relative)!r} is damaged: "
                f"expected sha256 {stored[key]}, found {sha}"
            )
        entries.append({"path": key, "sha256": sha, "size": size})
    missing = sorted(set(stored) - {entry["path"] for entry in entries})
    if missing:
        raise ChecksumMismatchError(
            f"artifact {record.name!r} v{record.version}: file {missing[0]!r} is missing"
        )
    actual = _manifest_checksum(entries)
    if actual != record.checksum:
        raise ChecksumMismatchError(
            f"artifact {record.name!r} v{record.version} at {str(path)!r} does not match its manifest: "
            f"expected sha256 {record.checksum}, found {actual}"
        )


def _manifest_path(version_path: Path) -> Path:
    return version_path.with_name(version_path.name + ".manifest.json")


def _link_into_place(source: Path, target: Path) -> None:
    """Make ``target`` show ``source`` (a file, or a tree of files) with hard links, swapped in atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        if source.is_dir():
            shutil.copytree(source, staging, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, staging)
        _replace(staging, target)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging)
        else:
            staging.unlink(missing_ok=True)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links here (FAT, some network shares) or the link limit was reached
        shutil.copyfile(source, target)


def _replace(staging: Path, target: Path) -> None:
    """Rename ``staging`` over ``target``; a folder on either side is first moved aside, then removed."""
    if target.is_symlink() or not (target.exists() and (target.is_dir() or staging.is_dir())):
        os.replace(staging, target)
        return
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    os.replace(target, aside)
    os.replace(staging, target)
    if aside.is_dir():
        shutil.rmtree(aside)
    else:
        aside.unlink()
