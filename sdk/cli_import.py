"""``runtel import <source> ...``: TensorBoard, MLflow, W&B offline or Neptune offline runs into the store.

A progress bar per run on a terminal (stderr), one line per run saying what happened, ``--json`` for
scripts. The exit status is 1 when a run failed to import; skipped folders (not a run of that source)
and runs already imported are not failures.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add ``import`` with one sub-command per source to ``commands`` (an argparse sub-parser set)."""
    parser = commands.add_parser("import", help="import runs from TensorBoard, MLflow, W&B or Neptune")
    sources = parser.add_subparsers(dest="source", required=True)
    tensorboard = sources.add_parser("tensorboard", help="every events folder under a log dir")
    tensorboard.add_argument("path", help="the log dir (one run per folder holding event files)")
    mlflow = sources.add_parser("mlflow", help="runs of an MLflow tracking server or store")
    mlflow.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///mlflow.db or http://host:5000")
    mlflow.add_argument("--experiment", default=None, help="only this experiment (name)")
    mlflow.add_argument("--run-id", default=None, help="only this run")
    wandb = sources.add_parser("wandb", help="W&B offline runs (offline-run-* folders)")
    wandb.add_argument("path", help="a wandb folder, or one offline-run-* folder")
    neptune = sources.add_parser("neptune", help="neptune 1.x offline and async runs")
    neptune.add_argument("path", help="a .neptune folder, or one run's folder in it")
    for sub in (tensorboard, mlflow, wandb, neptune):
        sub.add_argument(
            "--base-dir", default=None, help="store folder (default: runtel_runs or RUNTEL_BASE_DIR)"
        )
        sub.add_argument("--force", action="store_true", help="import again runs already in the store")
        sub.add_argument("--json", action="store_true", help="print every run's outcome as JSON on stdout")
        sub.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from runtel.cli_commands import print_json
    from runtel.importers import Outcome, import_source
    from runtel.store.query import Store

    options: dict[str, Any] = {}
    if args.source == "mlflow":
        options = {"tracking_uri": args.tracking_uri, "experiment": args.experiment, "run_id": args.run_id}
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:

        class Bars:
            task: Any = None

            def started(self, name: str, points: int) -> None:
                self.task = progress.add_task(f"{args.source} {name} → store", total=points)

            def advance(self, points: int) -> None:
                progress.advance(self.task, points)

            def finished(self, outcome: Outcome) -> None:
                if self.task is not None:
                    progress.remove_task(self.task)
                    self.task = None
                console.print(_line(outcome))

        outcomes = import_source(
            args.source,
            getattr(args, "path", None),
            base_dir=Store(args.base_dir).base_dir,
            force=args.force,
            listener=Bars(),
            options=options,
        )
    if args.json:
        print_json({"runs": [outcome.as_dict() for outcome in outcomes]})
    return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


def _line(outcome: Any) -> str:
    from rich.markup import escape

    where = escape(f"{outcome.name or outcome.source_path}")
    if outcome.status in ("imported", "replaced"):
        rate = outcome.points / outcome.seconds if outcome.seconds else 0.0
        adapted = ", ".join(f"{k} {v['count']}" for k, v in outcome.adaptations.items()) or "none"
        return (
            f"{where} ({outcome.run_id[:8]}): {outcome.status}, {outcome.points} points in "
            f"{outcome.seconds:.2f}s ({rate:,.0f}/s); adaptations: {adapted}"
        )
    colour = "red" if outcome.status == "failed" else "yellow"
    return f"[{colour}]{where}: {outcome.status}: {escape(str(outcome.reason))}"
