"""Deciding a new run's identity and folder: fresh, joined (``TRACEPARENT``, other ranks) or resumed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.context import Context

from runtel import _otel
from runtel._distributed import JobInfo, detect_job, root_span_id, shared_trace_id
from runtel._values import encodable
from runtel.config import Settings
from runtel.errors import ConfigError
from runtel.store import _layout
from runtel.store.query import Store


@dataclass(frozen=True, slots=True)
class RunPlace:
    run_id: str
    name: str
    job: JobInfo
    run_dir: Path
    #: Where this process writes: the run folder on rank 0, ``ranks/<rank>/`` on the others.
    own_dir: Path
    parent: Context | None
    root_span_id: int | None
    resumed: bool


def locate_run(settings: Settings, environ: Mapping[str, str], resume: str | None) -> RunPlace:
    """The run this process records into, with its folder created (or re-opened when resuming)."""
    base_dir = Path(settings.base_dir).absolute()
    if not encodable(str(base_dir)):  # records hold paths inside it as UTF-8 text (artifacts, figures)
        raise ConfigError(
            f"base_dir {str(base_dir)!r} (from init(), RUNTEL_BASE_DIR or the working directory) contains "
            "bytes that are not valid UTF-8, which the run's records cannot hold; use a folder whose path is"
            " valid UTF-8"
        )
    job = detect_job(environ)
    parent = _otel.remote_parent(environ)
    wanted = resume or settings.run_id
    existing = _existing_run(base_dir, wanted) if wanted else None
    if existing is not None:
        trace_id, name = int(existing.id, 16), existing.name
    elif wanted is not None and resume is not None:
        raise ConfigError(f"cannot resume {resume!r}: no such run in {base_dir}")
    elif wanted is not None:
        trace_id, name = int(wanted, 16), settings.name or f"run-{wanted[:6]}"
    elif parent is not None:
        trace_id = _otel.run_trace_id(parent)
        name = settings.name or f"run-{trace_id:032x}"[:10]
        if not job.distributed:
            _refuse_second_folder(base_dir, f"{trace_id:032x}")
    else:
        trace_id = _otel.run_trace_id(None)
        if job.distributed:
            trace_id = shared_trace_id(job, trace_id)
        name = settings.name or f"run-{trace_id:032x}"[:10]
    run_id = f"{trace_id:032x}"
    run_dir = existing.dir if existing is not None else base_dir / _layout.folder_name(name, run_id)

    root_id = root_span_id(trace_id) if job.distributed else None
    if job.distributed and not job.primary:
        parent = _otel.remote_span_context(trace_id, root_span_id(trace_id))
        root_id = None
    own_dir = run_dir if job.primary else run_dir / "ranks" / str(job.rank)
    resumed = (own_dir / _layout.METADATA).exists()
    if resumed and existing is None and not job.distributed and wanted is None:
        raise ConfigError(
            f"run {run_id} already has a folder in {base_dir} (TRACEPARENT joins an existing trace); "
            "use another base_dir for this process, or resume it with resume=/RUNTEL_RUN_ID"
        )
    if resumed:
        _refuse_live_writer(own_dir)
    else:
        _layout.create_run_dir(own_dir)
    return RunPlace(run_id, name, job, run_dir, own_dir, parent, root_id, resumed)


def _refuse_second_folder(base_dir: Path, run_id: str) -> None:
    """A process joining (``TRACEPARENT``) the trace of a run stored in the same base dir would give
    that id a second folder, and ``Store.run(id)`` could then reach only one of them."""
    found = _existing_run(base_dir, run_id)
    if found is not None:
        raise ConfigError(
            f"TRACEPARENT joins the trace of run {found.name} ({run_id}), whose folder {found.dir} is in "
            "this base_dir: record this process into another base_dir, or continue that run with "
            "resume=/RUNTEL_RUN_ID"
        )


def _existing_run(base_dir: Path, key: str) -> _Found | None:
    from runtel.errors import RunNotFoundError

    try:
        stored = Store(base_dir).run(key)
    except RunNotFoundError:
        return None
    return _Found(stored.id, stored.name, stored.dir)


@dataclass(frozen=True, slots=True)
class _Found:
    id: str
    name: str
    dir: Path


def _refuse_live_writer(own_dir: Path) -> None:
    from runtel.store.query import StoredRun

    if StoredRun(own_dir).status == "running":
        raise ConfigError(
            f"the run in {own_dir} is still being written by a live process; "
            "finish or stop it before resuming"
        )
