"""A sweep read back as tables: its trials best first, and the study's summary (for the CLI and the UI).

Everything is read from the run folders (see :mod:`runtel.sweep` for what the integrations write); a
trial whose series are missing or damaged gets empty cells instead of breaking the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from runtel.records import flatten_params
from runtel.store.query import Store, StoredRun
from runtel.sweep import sweep_runs

#: ``trial_state`` values, as the integrations write them.
STATE_NAMES = {0: "completed", 1: "pruned", 2: "failed"}


@dataclass(frozen=True, slots=True)
class SweepTable:
    sweep: StoredRun | None
    trials: list[StoredRun]
    #: The objective's series name in trial and sweep runs (``objective/<metric>``), or None if unknown.
    objective: str | None
    direction: Literal["minimize", "maximize"] | None
    #: One row per trial: completed trials best first, then pruned ones (their value is the last one
    #: reported, as Optuna keeps it), then the rest by number.
    rows: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """What ``runtel show SWEEP`` prints beside the sweep run itself."""
        ranked = [row for row in self.rows if row["objective"] is not None and row["state"] == "completed"]
        states: dict[str, int] = {}
        for row in self.rows:
            states[row["state"]] = states.get(row["state"], 0) + 1
        return {
            "name": self.sweep.name if self.sweep is not None else None,
            "id": self.sweep.id if self.sweep is not None else None,
            "objective": self.objective,
            "direction": self.direction,
            "trials": len(self.rows),
            "states": states,
            "best_trial": ranked[0]["trial"] if ranked and self.direction else None,
            "best": ranked[0]["objective"] if ranked and self.direction else None,
        }


def sweep_table(store: Store, key: str) -> SweepTable:
    """The sweep ``key`` (name or id); :class:`runtel.errors.RunNotFoundError` if the store has none."""
    sweep, trials = sweep_runs(store, key)
    settings = sweep.params().get("sweep", {}) if sweep is not None else {}
    settings = settings if isinstance(settings, dict) else {}
    metrics, directions = settings.get("metrics"), settings.get("directions")
    metric = metrics[0] if isinstance(metrics, list) and metrics and isinstance(metrics[0], str) else None
    direction = directions[0] if isinstance(directions, list) and directions else None
    direction = direction if direction in ("minimize", "maximize") else None
    objective = f"objective/{metric}" if metric is not None else None
    rows = [_row(run, objective) for run in trials]
    return SweepTable(sweep, trials, objective, direction, _best_first(rows, direction))


def _row(run: StoredRun, objective: str | None) -> dict[str, Any]:
    info = run.sweep
    status = _safe_status(run)
    state_code = _last(run, "trial_state")
    state = STATE_NAMES.get(int(state_code)) if state_code is not None else None
    return {
        "trial": info.trial if info is not None else None,
        "name": run.name,
        "id": run.id,
        "id8": run.id[:8],
        "status": status,
        "state": state or ("failed" if status in ("failed", "crashed", "killed") else status),
        "objective": _last(run, objective) if objective is not None else None,
        "params": _flat_params(run),
    }


def _best_first(rows: list[dict[str, Any]], direction: str | None) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple[int, float, int]:
        value = row["objective"]
        number = row["trial"] if isinstance(row["trial"], int) else -1
        group = {"completed": 0, "pruned": 1}.get(row["state"], 2)
        if value is None or math.isnan(value) or direction is None:
            return (2, 0.0, number)
        return (group, -value if direction == "maximize" else value, number)

    return sorted(rows, key=key)


def _last(run: StoredRun, metric: str) -> float | None:
    try:
        values = run.history(metric)[2]
    except Exception:  # absent or damaged series: an empty cell
        return None
    return float(values[-1]) if values.size else None


def _safe_status(run: StoredRun) -> str:
    try:
        return run.status
    except Exception:
        return "unreadable"


def _flat_params(run: StoredRun) -> dict[str, Any]:
    try:
        params = run.params()
    except Exception:
        return {}
    return flatten_params(params) if isinstance(params, dict) else {}


def param_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every parameter any trial has, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row["params"]))
    return list(names)
