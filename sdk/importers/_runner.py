"""Importing every run a source holds: find, skip what is already there, read, write, report.

One damaged or foreign run is reported as skipped (or failed, with the error) and the others go on.
A run imported before is left alone unless its source changed since (then it is re-imported in
place, same id) or ``force`` is given; a run left partial by an interrupted import is redone.
"""

from __future__ import annotations

import importlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from runtel.errors import ConfigError
from runtel.importers import _sink
from runtel.importers._source import Pending, Skipped, SourceRun
from runtel.store._jsonio import read_json

#: Source name → module with ``discover(path, **options)``; the module imports its library lazily.
SOURCES = {
    "tensorboard": "runtel.importers.tensorboard",
    "mlflow": "runtel.importers.mlflow",
    "wandb": "runtel.importers.wandb",
    "neptune": "runtel.importers.neptune",
}

Status = Literal["imported", "replaced", "unchanged", "skipped", "failed"]


@dataclass
class Outcome:
    """What happened to one source run (``folder`` is set when it is in the store)."""

    source: str
    source_path: str
    status: Status
    run_id: str | None = None
    name: str | None = None
    folder: str | None = None
    points: int | None = None
    seconds: float | None = None
    reason: str | None = None
    adaptations: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Listener(Protocol):
    """Progress hooks (the CLI draws bars with them); every method is optional to act on."""

    def started(self, name: str, points: int) -> None: ...

    def advance(self, points: int) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...


def discover(source: str, path: str | None, options: dict[str, Any]) -> Iterator[Pending | Skipped]:
    if source not in SOURCES:
        raise ConfigError(f"unknown import source {source!r}; choose one of {', '.join(SOURCES)}")
    module = importlib.import_module(SOURCES[source])
    finder: Callable[..., Iterator[Pending | Skipped]] = module.discover
    return finder(path, **options)


def import_source(
    source: str,
    path: str | None,
    *,
    base_dir: Path,
    force: bool = False,
    listener: Listener | None = None,
    options: dict[str, Any] | None = None,
) -> list[Outcome]:
    """Import every run ``source`` holds at ``path`` into the store at ``base_dir``; one outcome each."""
    outcomes = []
    base_dir.mkdir(parents=True, exist_ok=True)
    for found in discover(source, path, dict(options or {})):
        if isinstance(found, Skipped):
            outcome = Outcome(source, found.source_path, "skipped", reason=found.reason)
        else:
            outcome = _import_one(found, base_dir, force, listener)
        outcomes.append(outcome)
        if listener is not None:
            listener.finished(outcome)
    return outcomes


def _import_one(pending: Pending, base_dir: Path, force: bool, listener: Listener | None) -> Outcome:
    outcome = Outcome(pending.source, pending.source_path, "imported", run_id=pending.run_id)
    earlier = _sink.existing_import(base_dir, pending)
    if earlier is not None:
        folder, details = earlier
        current = details.get("state") == "complete" and details.get("fingerprint") == pending.fingerprint
        if current and not force:
            outcome.status, outcome.folder = "unchanged", str(folder)
            outcome.name = read_json(folder / "metadata.json", default={}).get("name")
            outcome.reason = "already imported (pass force=True / --force to import it again)"
            return outcome
        outcome.status = "replaced"
    started = time.perf_counter()
    run: SourceRun | None = None
    writing = False
    try:
        run = pending.load()
        run.source_id, run.fingerprint = pending.source_id, pending.fingerprint
        outcome.name = run.name
        if earlier is not None:  # only once the source was read: a source now unreadable keeps the old run
            _sink.remove_import(earlier[0])
        if listener is not None:
            listener.started(run.name, run.points())
        writing = True
        folder = _sink.write_run(base_dir, run, listener.advance if listener is not None else None)
    except Exception as exc:
        leftover = _sink.existing_import(base_dir, pending) if writing else None
        if leftover is not None:  # the half-written run of this attempt, never an earlier one
            _sink.remove_import(leftover[0])
        outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
        return outcome
    finally:
        for scratch in run.scratch if run is not None else ():
            shutil.rmtree(scratch, ignore_errors=True)
    outcome.folder, outcome.points = str(folder), run.points()
    outcome.seconds = time.perf_counter() - started
    outcome.adaptations = run.report.as_dict()
    return outcome
