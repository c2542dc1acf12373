"""Sweeps: a hyperparameter search (an Optuna study, a Ray Tune experiment) recorded as runs.

The sweep is a run of its own; each trial is a run that carries the sweep's id and name and whose
root span has an OpenTelemetry span link to the sweep's run span, so a trace backend shows the family.
``runtel.init(sweep=SweepRef(...))`` makes a run one or the other; the membership travels as resource
attributes (``runtel.sweep.*``, in ``RunStarted.resource``, so every exporter and every replay sees
it) and lands in ``metadata.json`` under ``sweep``. Search and scheduling stay in Optuna and Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace

if TYPE_CHECKING:
    from runtel.run import Run
    from runtel.store.query import Store, StoredRun

Role = Literal["sweep", "trial"]

ID_ATTRIBUTE = "runtel.sweep.id"
NAME_ATTRIBUTE = "runtel.sweep.name"
ROLE_ATTRIBUTE = "runtel.sweep.role"
TRIAL_ATTRIBUTE = "runtel.sweep.trial"


@dataclass(frozen=True, slots=True)
class SweepRef:
    """What ``runtel.init(sweep=...)`` needs: ``SweepRef(name)`` makes the run the sweep itself,
    :meth:`trial_of` makes it trial number ``trial`` of a sweep run."""

    name: str
    #: The sweep run's id (its trace id); None when the run being started is the sweep.
    id: str | None = None
    #: The sweep run's root span, which a trial's root span links to.
    span_id: int | None = None
    trial: int | None = None

    @classmethod
    def trial_of(cls, sweep: Run, trial: int) -> SweepRef:
        """Trial ``trial`` of the sweep recorded by the open run ``sweep``."""
        info = sweep.sweep
        name = info.name if info is not None else sweep.name
        return cls(name=name, id=sweep.id, span_id=sweep.root_span_id, trial=int(trial))

    @property
    def role(self) -> Role:
        return "sweep" if self.id is None else "trial"

    def resource_attributes(self, run_id: str) -> dict[str, str | int]:
        """The ``runtel.sweep.*`` attributes of run ``run_id`` (the sweep's own id if it is the sweep)."""
        attributes: dict[str, str | int] = {
            ID_ATTRIBUTE: self.id or run_id,
            NAME_ATTRIBUTE: self.name,
            ROLE_ATTRIBUTE: self.role,
        }
        if self.trial is not None:
            attributes[TRIAL_ATTRIBUTE] = self.trial
        return attributes

    def links(self) -> list[trace.Link]:
        """A trial's link to the sweep's run span (none for the sweep itself)."""
        if self.id is None or self.span_id is None:
            return []
        context = trace.SpanContext(
            int(self.id, 16), self.span_id, is_remote=True, trace_flags=trace.TraceFlags(1)
        )
        return [trace.Link(context, {"runtel.link": "sweep", NAME_ATTRIBUTE: self.name})]


@dataclass(frozen=True, slots=True)
class SweepInfo:
    """A run's sweep membership as read back from its folder."""

    id: str
    name: str
    role: Role
    trial: int | None


def stable_sweep_id(*parts: str) -> str:
    """A 32-hex run id derived from ``parts`` (engine, storage, study name), so a search resumed after a
    crash continues the same sweep run."""
    import hashlib

    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:32]
    return digest if int(digest, 16) else "1".rjust(32, "0")  # the all-zero trace id is invalid


def metadata_from_resource(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``sweep`` block of ``metadata.json`` from a ``RunStarted``'s resource (None outside sweeps)."""
    if ID_ATTRIBUTE not in resource:
        return None
    block = {
        "id": resource.get(ID_ATTRIBUTE),
        "name": resource.get(NAME_ATTRIBUTE),
        "role": resource.get(ROLE_ATTRIBUTE),
    }
    if TRIAL_ATTRIBUTE in resource:
        block["trial"] = resource[TRIAL_ATTRIBUTE]
    return block


def sweep_info(metadata: Mapping[str, Any]) -> SweepInfo | None:
    """The validated ``sweep`` block of a run's ``metadata.json``; None when absent or malformed
    (run folders are copied between people: a damaged block never breaks a listing)."""
    block = metadata.get("sweep")
    if not isinstance(block, dict):
        return None
    sweep_id, name, role, trial = block.get("id"), block.get("name"), block.get("role"), block.get("trial")
    if not (isinstance(sweep_id, str) and isinstance(name, str) and role in ("sweep", "trial")):
        return None
    if trial is not None and (isinstance(trial, bool) or not isinstance(trial, int)):
        return None
    return SweepInfo(sweep_id, name, role, trial)


def sweep_attributes(resource: Mapping[str, Any]) -> dict[str, str]:
    """``runtel.sweep.*`` of a ``RunStarted``'s resource as strings, for backends' tags (or empty)."""
    return {
        key: str(resource[key])
        for key in (ID_ATTRIBUTE, NAME_ATTRIBUTE, ROLE_ATTRIBUTE, TRIAL_ATTRIBUTE)
        if key in resource
    }


def sweep_runs(store: Store, key: str) -> tuple[StoredRun | None, list[StoredRun]]:
    """The sweep run (None if only trials are stored) and its trials by trial number, for a sweep name
    or id; :class:`runtel.errors.RunNotFoundError` when nothing in the store belongs to ``key``."""
    from runtel.errors import RunNotFoundError

    members = store.runs(sweep=key)
    sweeps = [run for run in members if run.sweep is not None and run.sweep.role == "sweep"]
    if not members:
        known = sorted({run.sweep.name for run in store.runs() if run.sweep is not None})
        raise RunNotFoundError(
            f"no sweep {key!r} in {store.base_dir}; sweeps there: {', '.join(known) or 'none'}"
        )
    sweep = sweeps[-1] if sweeps else None
    trials = [run for run in members if run.sweep is not None and run.sweep.role == "trial"]
    trials.sort(key=lambda run: run.sweep.trial if run.sweep and run.sweep.trial is not None else -1)
    return sweep, trials


__all__ = ["SweepInfo", "SweepRef", "metadata_from_resource", "stable_sweep_id", "sweep_info", "sweep_runs"]
