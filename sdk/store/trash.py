"""Deleting a run: moved to ``<base_dir>/.trash/`` first, so a mistaken ``rm`` is undone by moving it back.

A hidden folder is listed by nothing (``Store.runs``, ``runtel ls``, the UI skip names starting with
a dot), and a rename inside one file system is atomic: the run is either in the store or in the
trash, never half of it. A run whose writer is alive is refused: its files are open and its
metadata is rewritten at every heartbeat, so moving it would lose what it logs next.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from runtel.errors import RunStillRunningError, StoreWriteError
from runtel.store.query import StoredRun

TRASH = ".trash"


def delete_run(base_dir: Path, run: StoredRun, *, permanent: bool = False) -> Path | None:
    """Move ``run``'s folder into the trash (its new path), or remove it for good (``None``)."""
    if run.status == "running":
        raise RunStillRunningError(
            f"run {run.name} ({run.id}) is still running (pid {run.metadata.get('pid')} on "
            f"{run.metadata.get('host')}); finish or stop it before deleting it"
        )
    try:
        if permanent:
            shutil.rmtree(run.dir)
            return None
        trash = base_dir / TRASH
        trash.mkdir(exist_ok=True)
        target = _free_name(trash, run.dir.name)
        os.rename(run.dir, target)
    except OSError as exc:
        raise StoreWriteError(
            f"runtel cannot delete {run.dir}: {exc.strerror or exc}",
            path=str(exc.filename or run.dir),
            errno=exc.errno,
        ) from exc
    return target


def _free_name(trash: Path, folder: str) -> Path:
    """``.trash/<folder>``, or with the deletion time appended when a run of that folder is there already."""
    target = trash / folder
    if not target.exists():
        return target
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for number in range(1000):
        candidate = trash / (f"{folder}.deleted-{stamp}" + (f"-{number}" if number else ""))
        if not candidate.exists():
            return candidate
    raise StoreWriteError(f"too many deleted copies of {folder} in {trash}", path=str(trash), errno=None)
