"""A failing or hanging exporter never stops training, the store, or the other exporters."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import runtel
from runtel.api import exporter_factory
from runtel.exporters.base import Capabilities, ExportResult
from runtel.records import MetricPoints, Record, RunEnded, RunStarted


class CollectingExporter:
    """A real in-process exporter: keeps every record it is given."""

    name = "collecting"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.records: list[Record] = []

    def export(self, records: Sequence[Record]) -> ExportResult:
        self.records.extend(records)
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


class FailingExporter(CollectingExporter):
    name = "failing"

    def export(self, records: Sequence[Record]) -> ExportResult:
        raise ConnectionError("backend unreachable")


class HangingExporter(CollectingExporter):
    name = "hanging"

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, records: Sequence[Record]) -> ExportResult:
        self.release.wait()
        return ExportResult.SUCCESS


def log_many(run: runtel.Run, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        run.log({"loss": float(i), "acc": i / n})
    return time.perf_counter() - start


def test_failing_and_hanging_exporters_do_not_stop_training_or_others(base_dir: Path) -> None:
    collecting, failing, hanging = CollectingExporter(), FailingExporter(), HangingExporter()
    run = runtel.init(
        project="iso",
        name="iso",
        base_dir=str(base_dir),
        exporters=[failing, hanging, collecting],
        flush_interval=0.05,
        queue_size=2,
        queue_block_timeout=0.2,
        export_retries=1,
        export_timeout=1.0,
    )
    for _ in range(20):
        log_many(run, 5_000)
        time.sleep(0.02)
    started = time.perf_counter()
    run.finish()
    assert time.perf_counter() - started < 10
    hanging.release.set()

    stored = runtel.Store(base_dir).run(run.id)
    assert stored.status == "completed"
    assert stored.history("loss")[0].size == 100_000
    report = stored.summary()["exporters"]
    assert report["local"]["status"] == "ok"
    assert report["collecting"]["status"] == "ok"
    assert report["failing"]["status"] == "failed"
    assert "ConnectionError: backend unreachable" in report["failing"]["error"]
    assert report["failing"]["points_undelivered"] > 0
    assert report["hanging"]["status"] == "failed"
    assert report["hanging"]["records_undelivered"] > 0

    received = sum(len(r) for r in collecting.records if isinstance(r, MetricPoints))
    assert received == 200_000
    assert isinstance(collecting.records[0], RunStarted)
    assert isinstance(collecting.records[-1], RunEnded)


def test_unknown_exporter_name_is_a_clear_error(base_dir: Path) -> None:
    with pytest.raises(runtel.ConfigError, match="unknown exporter 'nope'"):
        runtel.init(project="p", base_dir=str(base_dir), exporters=["nope"])


def test_exporter_names_come_from_the_environment(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTEL_EXPORTERS", "local,nope")
    with pytest.raises(runtel.ConfigError, match="'nope'"):
        runtel.init(project="p", base_dir=str(base_dir))


def test_local_is_the_store_itself_not_an_export_target(base_dir: Path) -> None:
    assert "local" not in runtel.available_exporters()
    with runtel.init(project="p", base_dir=str(base_dir), exporters=["local"], system_interval=0) as run:
        run.log({"x": 1.0})
    assert runtel.Store(base_dir).run(run.id).history("x")[2].tolist() == [1.0]
    with pytest.raises(runtel.ConfigError, match="'local' is the local store itself"):
        exporter_factory("local")


class BufferingExporter(CollectingExporter):
    """Holds points until flushed, as a backend client with its own buffer does."""

    name = "buffering"

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Record] = []

    def export(self, records: Sequence[Record]) -> ExportResult:
        self.pending.extend(records)
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.records.extend(self.pending)
        self.pending.clear()
        return True


def test_flush_with_exporters_makes_each_backend_deliver_and_flush(base_dir: Path) -> None:
    buffering = BufferingExporter()
    run = runtel.init(project="iso", base_dir=str(base_dir), exporters=[buffering], flush_interval=60)
    for step in range(100):
        run.log({"loss": float(step)})
    assert run.flush()  # the store only
    assert buffering.records == []
    assert run.flush(exporters=True)
    delivered = [r for r in buffering.records if isinstance(r, MetricPoints)]
    assert sum(len(r) for r in delivered) == 100
    run.finish()


def test_flush_with_exporters_gives_up_on_a_hanging_one_within_the_timeout(base_dir: Path) -> None:
    hanging, collecting = HangingExporter(), CollectingExporter()
    run = runtel.init(
        project="iso", base_dir=str(base_dir), exporters=[hanging, collecting], export_timeout=1.0
    )
    run.log({"loss": 1.0})
    started = time.monotonic()
    assert run.flush(timeout=0.5, exporters=True) is False
    assert time.monotonic() - started < 5
    assert sum(len(r) for r in collecting.records if isinstance(r, MetricPoints)) == 1
    hanging.release.set()
    run.finish()
