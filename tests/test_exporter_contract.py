"""The dispatcher keeps the ``Exporter`` contract: deadlines passed down, one thread, order kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import runtel
from runtel.exporters.base import Capabilities, ExportResult
from runtel.records import Record, RunEnded, RunStarted


class Recording:
    """A third-party style exporter that remembers what the dispatcher gave it, and on which thread."""

    name = "recording"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.flush_timeouts: list[int] = []
        self.shutdown_timeouts: list[int] = []
        self.threads: set[int] = set()

    def export(self, records: Sequence[Record]) -> ExportResult:
        self.threads.add(threading.get_ident())
        self.kinds.extend(type(record).__name__ for record in records)
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.threads.add(threading.get_ident())
        self.flush_timeouts.append(timeout_millis)
        return True

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self.threads.add(threading.get_ident())
        self.shutdown_timeouts.append(timeout_millis)


def test_flush_and_shutdown_get_the_remaining_deadline_on_the_exporters_own_thread(base_dir: Path) -> None:
    exporter = Recording()
    run = runtel.init(project="contract", base_dir=str(base_dir), exporters=[exporter], export_timeout=3)
    run.log({"x": 1.0})
    assert run.flush(timeout=2, exporters=True)
    run.finish()
    (flushed,) = exporter.flush_timeouts
    (shut,) = exporter.shutdown_timeouts
    assert 0 < flushed <= 2000 and 0 < shut <= 3000
    assert len(exporter.threads) == 1 and threading.get_ident() not in exporter.threads
    assert exporter.kinds[0] == RunStarted.__name__ and exporter.kinds[-1] == RunEnded.__name__


def test_a_shutdown_without_a_timeout_parameter_is_still_called(base_dir: Path) -> None:
    class Plain(Recording):
        def shutdown(self) -> None:  # type: ignore[override]
            self.shutdown_timeouts.append(-1)

    exporter = Plain()
    with runtel.init(project="contract", base_dir=str(base_dir), exporters=[exporter]) as run:
        run.log({"x": 1.0})
    assert exporter.shutdown_timeouts == [-1]
