"""``runtel.init`` and ``runtel.finish``: starting runs, and making sure none is left unfinished."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor

from runtel._distributed import detect_job
from runtel._otel import error_type
from runtel.config import resolve_settings
from runtel.errors import ConfigError
from runtel.exporters.base import ENTRY_POINT_GROUP, Exporter
from runtel.run import Run, _remember, active_runs
from runtel.sweep import SweepRef

_hooks_installed = False
_hooks_lock = threading.Lock()
_uncaught: str | None = None
_uncaught_type: str | None = None


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    base_dir: str | None = None,
    exporters: Sequence[str | Exporter] | None = None,
    *,
    tags: Sequence[str] | None = None,
    flush_interval: float | None = None,
    system_interval: float | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    exporter_options: Mapping[str, Mapping[str, Any]] | None = None,
    resume: str | None = None,
    sweep: SweepRef | None = None,
    **settings: Any,
) -> Run:
    """Start a run recorded in the local store (always) and in the given ``exporters``.

    ``exporters`` are names registered in the ``runtel.exporters`` entry-point group (built in:
    wandb, mlflow, tensorboard, neptune) or exporter objects; ``exporter_options`` gives a named
    exporter its keyword arguments, e.g. ``{"mlflow": {"tracking_uri": "sqlite:///mlflow.db"}}``.
    ``resume`` continues a stored run (id, id prefix or name) after preemption or a crash, as
    ``RUNTEL_RUN_ID`` does: same trace id, steps continuing after the last one stored.
    Every argument left as None falls back to its ``RUNTEL_*`` environment variable
    (see docs/configuration.md), then to its default. ``sweep`` makes the run a sweep or one of its
    trials (:class:`runtel.sweep.SweepRef`, docs/sweeps.md); integrations set it for you.
    """
    resolved = resolve_settings(
        {
            "project": project,
            "name": name,
            "base_dir": base_dir,
            "tags": tuple(tags) if tags is not None else None,
            "flush_interval": flush_interval,
            "system_interval": system_interval,
            **settings,
        }
    )
    chosen: list[str | Exporter] = list(exporters) if exporters is not None else list(resolved.exporters)
    if not detect_job(os.environ).primary:  # backends get one run per job: rank 0's
        chosen = [item for item in chosen if item != "local" and _on_every_rank(item)]
    run = Run(
        resolved,
        config=config,
        exporters=[_resolve_exporter(item, exporter_options or {}) for item in chosen if item != "local"],
        span_processors=span_processors,
        metric_readers=metric_readers,
        resume=resume,
        sweep=sweep,
    )
    _remember(run)
    _install_hooks()
    return run


def finish(status: str = "completed") -> None:
    """Finish the most recently started run that is still open (no-op when there is none)."""
    runs = active_runs()
    if runs:
        runs[-1].finish(status)


def available_exporters() -> dict[str, str]:
    """Exporter names registered in the ``runtel.exporters`` entry-point group, with their targets."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def exporter_factory(name: str) -> Callable[..., Exporter]:
    """The class registered as ``name`` in the ``runtel.exporters`` entry-point group."""
    from importlib.metadata import entry_points

    if name == "local":
        raise ConfigError(
            "'local' is the local store itself: every run is always written there, so it is neither an "
            "exporter object nor a target of `runtel export`; choose a backend such as mlflow or tensorboard"
        )
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            factory: Callable[..., Exporter] = ep.load()
            return factory
    raise ConfigError(f"unknown exporter {name!r}; available: {sorted(available_exporters())}")


def _on_every_rank(item: str | Exporter) -> bool:
    """Whether each rank of a job keeps this exporter (per-process telemetry such as OTLP)."""
    source = exporter_factory(item) if isinstance(item, str) else item
    return bool(getattr(getattr(source, "capabilities", None), "every_rank", False))


def _resolve_exporter(item: str | Exporter, options: Mapping[str, Mapping[str, Any]]) -> Exporter:
    if not isinstance(item, str):
        if not isinstance(item, Exporter):
            raise ConfigError(
                f"exporters must be names or objects with export/force_flush/shutdown, got {item!r}"
            )
        return item
    return exporter_factory(item)(**options.get(item, {}))


def _install_hooks() -> None:
    """At exit, finish runs a script forgot; an uncaught exception marks them failed.

    ``atexit`` runs hooks last-registered first, and a backend library registers its own teardown
    when its exporter starts it (W&B's service process): the hook is therefore registered again at
    every ``init``, after the exporters of that run were built, so open runs are finished and
    exported while every backend is still up.
    """
    global _hooks_installed
    with _hooks_lock:
        atexit.unregister(_finish_all_at_exit)
        atexit.register(_finish_all_at_exit)
        if _hooks_installed:
            return
        _hooks_installed = True
    previous = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        global _uncaught, _uncaught_type
        _uncaught = "".join(traceback.format_exception(exc_type, exc, tb))
        _uncaught_type = error_type(exc_type)
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _finish_all_on_sigterm)


def _finish_all_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A scheduler or launcher stopping the job: runs end ``killed``, then the default action."""
    for run in reversed(active_runs()):
        run.finish("killed", error="SIGTERM", error_type="SIGTERM")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _finish_all_at_exit() -> None:
    for run in reversed(active_runs()):
        if _uncaught is None:
            run.finish("completed")
        else:
            run.finish("failed", error=_uncaught, error_type=_uncaught_type)
