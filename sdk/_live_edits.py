"""Tags, note and name of a live run (``run.tags.add``, ``run.set_note``, ``run.rename``): the same edits
as on a stored run.

They are appended to the run folder's ``edits.jsonl`` (:mod:`runtel.store.edits`, never through the store
writer, which owns ``metadata.json``) and sent at once to the run's exporters as ``RunEdited``. Edits
another process made while the run was live (``runtel tag``) reach those exporters at ``finish()``,
before ``RunEnded``, so a live W&B, MLflow or Neptune run ends with the tags the store shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtel.errors import StoreWriteError
from runtel.records import Record, RunEdited
from runtel.store.edits import Tags, append_edit, make_edit, read_edits, what_changes, with_edits
from runtel.store.query import read_metadata

logger = logging.getLogger("runtel")


class LiveEdits:
    """The edits of one live run: written to its folder, forwarded to its exporters."""

    def __init__(
        self,
        run_dir: Path,
        started: float,
        send: Callable[[Sequence[Record]], None],
        live: Callable[[], bool],
    ) -> None:
        self._dir = run_dir
        self._started = started
        self._send = send
        self._live = live  # after finish() the exporters are closed: an edit is only stored, as any later one
        self._own: set[RunEdited] = set()
        #: Edits not stored while the run was live (the edits file full or unwritable), warned once.
        self.refused = 0

    @property
    def tags(self) -> Tags:
        return Tags(self._current_tags, self.record)

    def set_note(self, note: str) -> None:
        self.record(make_edit(note=note))

    def rename(self, name: str) -> str:
        """Record the new display name; the run's name afterwards (unchanged if it was not stored)."""
        self.record(make_edit(name=name))
        return str(self._effective().get("name") or name)

    def record(self, edit: RunEdited) -> None:
        changes = what_changes(edit, self._effective())
        if changes is None:
            return
        if self._live():
            try:
                append_edit(self._dir, changes)
            except StoreWriteError as exc:  # a full or unwritable edits file must not stop training
                self._refused(changes, exc)
                return
        else:
            append_edit(self._dir, changes)
        self._own.add(changes)
        if self._live():
            self._send([changes])

    def _refused(self, edit: RunEdited, error: StoreWriteError) -> None:
        """An edit a live run could not store: warned (once per run, then counted), not raised."""
        self.refused += 1
        if self.refused == 1:
            logger.warning(
                "runtel: an edit of run %s was not recorded (%s); the run goes on logging, and "
                "later edits that cannot be stored are dropped the same way",
                self._dir.name,
                error,
            )

    def others(self) -> list[RunEdited]:
        """Edits made by other processes since this session of the run started, in order."""
        return [e for e in read_edits(self._dir).edits if e.time >= self._started and e not in self._own]

    def _current_tags(self) -> tuple[str, ...]:
        return tuple(self._effective().get("tags") or ())

    def _effective(self) -> dict[str, Any]:
        return with_edits(self._dir, read_metadata(self._dir))
