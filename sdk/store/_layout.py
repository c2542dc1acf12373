"""Where things live in a run folder. Names never become paths directly: see the series index."""

from __future__ import annotations

import re
from pathlib import Path

from runtel.errors import StoreWriteError
from runtel.store._portable import is_device_name

METADATA = "metadata.json"
HYPERPARAMETERS = "hyperparameters.json"
SUMMARY = "summary.json"
ARTIFACTS = "artifacts.json"
EVENTS = "events.jsonl"
METRICS_DIR = "metrics"
SERIES_INDEX = "index.json"
SUBDIRS = ("metrics", "artifacts", "plots", "versions")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def folder_name(name: str, run_id: str) -> str:
    """``<name>_<id8>`` as in the seed layout, with the name reduced to portable characters (and a
    ``_`` before a Windows device name: ``nul.txt_<id8>`` would open the NUL device there)."""
    slug = _UNSAFE.sub("-", name).strip("-.")[:64] or "run"
    folder = f"{slug}_{run_id[:8]}"
    return f"_{folder}" if is_device_name(folder) else folder


def create_run_dir(run_dir: Path) -> None:
    """Lay out a run folder (or a rank's folder inside one); other ranks may be creating theirs.

    A folder that cannot be created (read-only or unwritable ``base_dir``) is a ``StoreWriteError``.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        for sub in SUBDIRS:
            (run_dir / sub).mkdir(exist_ok=True)
    except OSError as exc:
        path = exc.filename or str(run_dir)
        raise StoreWriteError(
            f"runtel cannot create the run folder {run_dir}: [Errno {exc.errno}] {exc.strerror} ({path}); "
            "pass a writable base_dir (or RUNTEL_BASE_DIR)",
            path=str(path),
            errno=exc.errno,
        ) from exc
