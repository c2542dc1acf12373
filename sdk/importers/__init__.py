"""Import runs from the trackers people are leaving: TensorBoard, MLflow, W&B offline, Neptune offline.

Each source module reads its source with the source library's own reader and produces the records a
live run produces, written into the store; ``runtel export`` then replays them anywhere. What the
source lost or the store cannot hold is in the run's ``summary.json`` under ``import.adaptations``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtel.importers._runner import SOURCES, Listener, Outcome, import_source
from runtel.store.query import Store, StoredRun


def import_runs(
    source: str,
    path: str | os.PathLike[str] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    listener: Listener | None = None,
    **options: Any,
) -> list[StoredRun]:
    """Import every run ``source`` holds at ``path``; returns the stored runs (imported or already there).

    ``source`` is ``tensorboard`` (a log dir), ``mlflow`` (``tracking_uri=``, ``experiment=``,
    ``run_id=``; ``path`` unused), ``wandb`` (a ``wandb`` folder of ``offline-run-*``) or ``neptune``
    (a ``.neptune`` folder). Skipped and failed runs raise nothing here; use :func:`import_source` for
    every outcome. ``force`` re-imports runs that are already in the store.
    """
    store = Store(base_dir)
    outcomes = import_source(
        source,
        None if path is None else os.fspath(path),
        base_dir=store.base_dir,
        force=force,
        listener=listener,
        options=options,
    )
    return [StoredRun(Path(o.folder)) for o in outcomes if o.folder is not None]


__all__ = ["SOURCES", "Listener", "Outcome", "import_runs", "import_source"]
