"""``ExperimentManager``: the seed's view over every experiment (run) in one base folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel.errors import RunStillRunningError
from runtel.store.query import Mode, Store, StoredRun
from runtel.tracking import report
from runtel.tracking._autoviz import plotted_series
from runtel.tracking.experiment import ExperimentTracker
from runtel.tracking.visualizer import MetricVisualizer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Comparison", "ExperimentManager"]


@dataclass(frozen=True, eq=False)
class Comparison(Mapping[str, "Figure"]):
    """What ``compare_experiments`` returns: a mapping ``metric -> Figure`` (one line per experiment),
    plus ``table`` (one row per experiment and metric, keys ``report.TABLE_COLUMNS``) and
    ``experiments`` (id, name, status, created_at, params of each, in the order asked).
    """

    figures: dict[str, Figure]
    table: list[dict[str, Any]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, metric: str) -> Figure:
        return self.figures[metric]

    def __iter__(self) -> Iterator[str]:
        return iter(self.figures)

    def __len__(self) -> int:
        return len(self.figures)


class ExperimentManager:
    """Creates, finds, compares and deletes experiments under ``base_dir`` (default ``RUNTEL_BASE_DIR``
    or ``runtel_runs``)."""

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        self.base_dir = Store(base_dir).base_dir.absolute()
        self.store = Store(self.base_dir)

    def create_experiment(
        self, name: str, auto_visualize: bool = True, backend: str | None = None
    ) -> ExperimentTracker:
        return ExperimentTracker(name, self.base_dir, auto_visualize, backend)

    def get_experiment(
        self, experiment_id: str, auto_visualize: bool = True, backend: str | None = None
    ) -> ExperimentTracker:
        """The stored experiment: read-only when finished, re-opened for resume when its process died
        (see ``ExperimentTracker.open``); ``RunNotFoundError`` if there is none."""
        return ExperimentTracker.open(
            experiment_id, self.base_dir, auto_visualize=auto_visualize, backend=backend
        )

    def list_experiments(self) -> list[dict[str, Any]]:
        """Oldest first: ``experiment_id``, ``experiment_name``, ``status``, ``created_at``, ``ended_at``,
        ``project``, ``experiment_dir``. A run whose writer died shows ``crashed``."""
        return [
            {
                "experiment_id": run.id,
                "experiment_name": run.name,
                "status": run.status,
                "created_at": run.metadata.get("created_at"),
                "ended_at": run.metadata.get("ended_at"),
                "project": run.project,
                "experiment_dir": str(run.dir),
            }
            for run in self.store.runs()
        ]

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove the experiment's folder; refuses one that is still running."""
        run = self.store.run(experiment_id)
        if run.status == "running":
            raise RunStillRunningError(
                f"experiment {run.name} ({run.id}) is still running; finish it before deleting it"
            )
        shutil.rmtree(run.dir)

    def compare_experiments(
        self, experiment_ids: Sequence[str], metrics: Sequence[str] | None = None, mode: Mode = "auto"
    ) -> Comparison:
        """Figures and a table for ``metrics`` (default: every metric of any of the experiments).

        ``mode`` picks the direction of ``best``: ``auto`` treats names with loss/error/... as lower is
        better, everything else as higher is better.
        """
        runs = [self.store.run(key) for key in experiment_ids]
        histories = {_label(run, runs): plotted_series(run) for run in runs}
        names = (
            list(metrics)
            if metrics is not None
            else list(dict.fromkeys(n for h in histories.values() for n in h))
        )
        rows = [
            {
                "experiment_id": row["run_id"],
                "experiment_name": row["name"],
                **{key: row[key] for key in report.TABLE_COLUMNS[2:]},
            }
            for row in self.store.compare(runs, names, mode)
        ]
        return Comparison(
            figures=MetricVisualizer.create_comparison_plots(histories, names),
            table=rows,
            experiments=[_describe(run) for run in runs],
        )

    def export_comparison(
        self,
        experiment_ids: Sequence[str],
        output_dir: str | os.PathLike[str] = "comparison_report",
        metrics: Sequence[str] | None = None,
    ) -> Path:
        """Write ``comparison.html`` (self-contained), ``comparison.csv`` and ``comparison.json`` into
        ``output_dir``; returns the HTML page's path."""
        comparison = self.compare_experiments(experiment_ids, metrics)
        return report.export_comparison(
            comparison.experiments, comparison.table, comparison.figures, output_dir
        )


def _label(run: StoredRun, runs: Sequence[StoredRun]) -> str:
    """The run's name, with its short id when another compared run has the same name."""
    clash = sum(other.name == run.name for other in runs) > 1
    return f"{run.name} ({run.id[:8]})" if clash else run.name


def _describe(run: StoredRun) -> dict[str, Any]:
    return {
        "experiment_id": run.id,
        "experiment_name": run.name,
        "status": run.status,
        "created_at": run.metadata.get("created_at"),
        "params": run.params(),
    }
