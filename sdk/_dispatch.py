"""Fan-out of a run's records to the local store and its exporters, each on its own thread.

Like OpenTelemetry's batch processors: the flush thread only enqueues; an exporter that
raises is retried with back-off and then marked failed; one that hangs fills its queue
and is marked failed once the queue stays full past a bound. Neither stops training nor
the other exporters. The local store (source of truth) is a sink of its own, never given up
on: its queue is unbounded, and its writer resumes a failed write exactly where it stopped
(:mod:`runtel.store.writer`), so it is retried while it has a backlog, never re-sent. Error texts
are redacted (:mod:`runtel._redact`) before they are stored or logged. In a forked child nothing
waits for the parent's worker threads, which the child does not have.
"""

from __future__ import annotations

import inspect
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel import _redact
from runtel.exporters.base import Exporter, ExportResult

if TYPE_CHECKING:
    from runtel._adapt import Adapter
    from runtel.store.writer import StoreWriter
from runtel.records import MetricPoints, Record

logger = logging.getLogger("runtel")
_redact.install(logger)

#: Seconds between retries of the local store's backlog while the disk refuses writes.
STORE_RETRY_INTERVAL = 1.0


class _Stop:
    """Queued last at shutdown: the worker shuts its exporter down with what is left of ``deadline``."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline


class _Barrier:
    """Queued behind everything before it; set once the worker reaches it (and, with ``flush``, once
    the exporter's ``force_flush`` has returned, given what is left of ``deadline``)."""

    def __init__(self, *, flush: bool = False, deadline: float | None = None) -> None:
        self.flush = flush
        self.deadline = deadline
        self.reached = threading.Event()


def _millis_left(deadline: float | None) -> int:
    """Milliseconds until ``deadline`` (a ``time.monotonic`` value), never negative; 30 s without one."""
    return 30_000 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))


def _takes_timeout(method: Any) -> bool:
    """Whether ``shutdown`` accepts ``timeout_millis`` (optional in the contract, as in OTel's exporters)."""
    try:
        return "timeout_millis" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class ExporterReport:
    """What happened to one exporter during a run; written into the run's summary."""

    name: str
    status: str = "ok"  # ok | failed
    error: str | None = None
    batches_exported: int = 0
    points_delivered: int = 0
    records_undelivered: int = 0
    points_undelivered: int = 0
    retries: int = 0
    adaptations: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None}


@dataclass
class _Worker:
    exporter: Exporter
    queue: queue.Queue[Any]
    retries: int
    report: ExporterReport
    adapter: Adapter | None
    #: False for an exporter that reads only the run's OpenTelemetry pipeline (OTLP, Prometheus): it
    #: is given no record batches, only flushes and the shutdown.
    takes_records: bool = True
    thread: threading.Thread = field(init=False)

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._loop, name=f"runtel-export-{self.report.name}", daemon=True
        )
        self.thread.start()

    def _loop(self) -> None:
        while True:
            batch = self.queue.get()
            if isinstance(batch, _Stop):
                self._shutdown(_millis_left(batch.deadline))
                return
            if isinstance(batch, _Barrier):
                if batch.flush and self.report.status != "failed":
                    self._force_flush(_millis_left(batch.deadline))
                batch.reached.set()
                continue
            if self.report.status == "failed":
                self._count_undelivered(batch)
                continue
            if self.adapter is not None:
                try:
                    batch = self.adapter.adapt(batch)
                except Exception as exc:
                    logger.exception("runtel: adapting records for %r failed", self.report.name)
                    self.mark_failed(f"adaptation failed: {_describe(exc)}")
                    self._count_undelivered(batch)
                    continue
            self._export_with_retries(batch)

    def _shutdown(self, timeout_millis: int) -> None:
        """``exporter.shutdown``, given the time left of ``finish()``'s deadline when it takes one."""
        try:
            if _takes_timeout(self.exporter.shutdown):
                self.exporter.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
            else:
                self.exporter.shutdown()
        except Exception:
            logger.exception("runtel: exporter %r failed to shut down", self.report.name)

    def _force_flush(self, timeout_millis: int) -> None:
        try:
            if not self.exporter.force_flush(timeout_millis):
                logger.warning("runtel: exporter %r could not flush everything", self.report.name)
        except Exception:
            logger.exception("runtel: exporter %r failed to flush", self.report.name)

    def _export_with_retries(self, batch: Sequence[Record]) -> None:
        delay = 0.2
        error = "export returned FAILURE"
        for attempt in range(self.retries + 1):
            try:
                if self.exporter.export(batch) is ExportResult.SUCCESS:
                    self.report.batches_exported += 1
                    self.report.points_delivered += _points(batch)
                    return
            except Exception as exc:
                error = _describe(exc)
                logger.warning(
                    "runtel: exporter %r raised %s (attempt %d)", self.report.name, error, attempt + 1
                )
            if attempt < self.retries:
                self.report.retries += 1
                time.sleep(delay)
                delay = min(delay * 4, 5.0)
        self.mark_failed(f"gave up after {self.retries + 1} attempts: {error}")
        self._count_undelivered(batch)

    def mark_failed(self, error: str) -> None:
        error = _redact.redact(error)
        if self.report.status != "failed":
            logger.error(
                "runtel: exporter %r failed (%s); training goes on, the local store keeps everything, "
                "replay later with `runtel export`",
                self.report.name,
                error,
            )
        self.report.status = "failed"
        self.report.error = self.report.error or error

    def _count_undelivered(self, batch: Sequence[Record]) -> None:
        self.report.records_undelivered += len(batch)
        self.report.points_undelivered += _points(batch)


def _points(batch: Sequence[Record]) -> int:
    return sum(len(r) for r in batch if isinstance(r, MetricPoints))


class _StoreWorker:
    """Feeds the store writer from an unbounded queue; while it has a backlog, retries it when idle."""

    def __init__(self, store: StoreWriter) -> None:
        self.store = store
        self.queue: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="runtel-store", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=None if self.store.caught_up else STORE_RETRY_INTERVAL)
            except queue.Empty:
                self._guard(self.store.retry)
                continue
            if isinstance(item, _Stop):
                return
            if isinstance(item, _Barrier):
                item.reached.set()
                continue
            self._guard(self.store.write, item)

    @staticmethod
    def _guard(call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except Exception:  # the writer counts its own failures; this keeps the thread alive
            logger.exception("runtel: the local store writer failed unexpectedly")


class Dispatcher:
    """Delivers record batches to the local store (``store``) and to every exporter."""

    def __init__(
        self,
        store: StoreWriter,
        exporters: Sequence[Exporter],
        *,
        queue_size: int,
        block_timeout: float,
        retries: int,
        scratch_dir: Path,
    ) -> None:
        from runtel._adapt import Adapter  # at run start rather than at `import runtel`

        self._block_timeout = block_timeout
        self._pid = os.getpid()
        self._store = _StoreWorker(store)
        self._workers = []
        for exporter in exporters:
            _redact.remember_held_by(exporter)
            name = getattr(exporter, "name", type(exporter).__name__)
            capabilities = getattr(exporter, "capabilities", None)
            takes_records = getattr(capabilities, "records", True)
            self._workers.append(
                _Worker(
                    exporter=exporter,
                    queue=queue.Queue(maxsize=queue_size),
                    retries=retries,
                    report=ExporterReport(name=name),
                    adapter=None
                    if capabilities is None or not takes_records
                    else Adapter(name, capabilities, scratch_dir / name),
                    takes_records=takes_records,
                )
            )
        for worker in self._workers:
            worker.start()

    def submit(self, batch: Sequence[Record], *, include_store: bool = True) -> None:
        """Enqueue ``batch`` for the store and every exporter; blocks at most ``block_timeout`` per
        slow exporter (never for the store, whose queue is unbounded)."""
        if not batch:
            return
        if include_store:
            self._store.queue.put(batch)
        for worker in self._workers:
            if not worker.takes_records:
                continue
            if worker.report.status == "failed":
                worker._count_undelivered(batch)
                continue
            try:
                worker.queue.put(batch, timeout=self._block_timeout)
            except queue.Full:
                worker.mark_failed(
                    f"queue stayed full for {self._block_timeout}s (exporter hung or too slow)"
                )
                worker._count_undelivered(batch)

    def health(self) -> list[dict[str, Any]]:
        """Each exporter's live readings (``runtel._health``): name, status, queue depth, points, retries."""
        return [
            {
                "name": w.report.name,
                "status": w.report.status,
                "queue_depth": w.queue.qsize(),
                "points_delivered": w.report.points_delivered,
                "points_undelivered": w.report.points_undelivered,
                "retries": w.report.retries,
                "failed": int(w.report.status == "failed"),
            }
            for w in self._workers
        ]

    def store_queue_depth(self) -> int:
        """Batches submitted to the store writer that it has not taken in yet."""
        return self._store.queue.qsize()

    def wait_for_store(self, timeout: float | None = None) -> bool:
        """Block until the store writer has taken in everything submitted so far; True if it is all
        on disk (False while the disk refuses writes, when ``timeout`` ran out, or in a forked child)."""
        if self._forked():
            return False
        barrier = _Barrier()
        self._store.queue.put(barrier)
        return barrier.reached.wait(timeout) and self._store.store.caught_up

    def force_flush(self, timeout: float) -> bool:
        """Every exporter delivers what was submitted so far and flushes what it buffers; False if one
        did not within ``timeout`` seconds. A failed exporter is skipped."""
        if self._forked():
            return False
        deadline = time.monotonic() + timeout
        barriers = []
        done = True
        for worker in self._workers:
            if worker.report.status == "failed":
                continue
            barrier = _Barrier(flush=True, deadline=deadline)
            try:
                worker.queue.put(barrier, timeout=self._block_timeout)
            except queue.Full:
                done = False
                continue
            barriers.append(barrier)
        done = self.wait_for_store(timeout) and done
        for barrier in barriers:
            done = barrier.reached.wait(max(0.0, deadline - time.monotonic())) and done
        return done

    def shutdown(self, timeout: float) -> list[ExporterReport]:
        """Drain and stop every worker, waiting for the store and at most ``timeout`` seconds for the
        exporters; the exporters' reports (the store writer keeps its own). In a forked child it
        returns the reports as they are: the workers are the parent's."""
        if self._forked():
            return [worker.report for worker in self._workers]
        deadline = time.monotonic() + timeout
        self._store.queue.put(_Stop(deadline))
        for worker in self._workers:
            try:
                worker.queue.put(_Stop(deadline), timeout=0.1)
            except queue.Full:
                worker.mark_failed("still busy at shutdown (queue full)")
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread.is_alive():
                worker.mark_failed(f"did not finish within {timeout}s of finish(); abandoned")
                worker.report.records_undelivered += worker.queue.qsize()
        self._store.thread.join()
        for worker in self._workers:
            if worker.adapter is not None:
                worker.report.adaptations = worker.adapter.report()
        return [worker.report for worker in self._workers]

    def _forked(self) -> bool:
        return os.getpid() != self._pid


def _describe(exc: BaseException) -> str:
    """An exception as stored in a report: its type and its message, credentials redacted."""
    return _redact.redact(f"{type(exc).__name__}: {exc}")
