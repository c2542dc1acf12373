"""The ``runtel`` command line: ``demo``, ``export`` (replay stored runs to a backend), and the read-only
``ls``, ``show``, ``compare`` and ``ui`` of :mod:`runtel.cli_commands`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from runtel import __version__
from runtel._hotpath import ACCELERATED
from runtel.cli_commands import open_run, open_store, print_json
from runtel.cli_commands import register as register_read_commands
from runtel.cli_dump import register as register_dump
from runtel.cli_edit import register as register_edit
from runtel.cli_import import register as register_import
from runtel.errors import AlreadyExportedError, RuntelError
from runtel.store.scan import forget_reads

#: CLI flags that become keyword arguments of the chosen exporter's constructor.
_EXPORTER_FLAGS = {
    "tracking_uri": "--tracking-uri",
    "experiment_name": "--experiment-name",
    "log_dir": "--log-dir",
    "project": "--project",
    "entity": "--entity",
    "mode": "--mode",
    "dir": "--dir",
    "data_directory": "--data-directory",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtel", description="OpenTelemetry-native experiment tracking.")
    hot_path = "C hot path" if ACCELERATED else "pure-Python hot path"
    parser.add_argument("--version", action="version", version=f"runtel {__version__} ({hot_path})")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a small real training loop logged to the local store")
    demo.add_argument(
        "--base-dir", default=None, help="store folder (default: runtel_runs or RUNTEL_BASE_DIR)"
    )
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--json", action="store_true", help="print the run's id and folder as JSON")

    export = commands.add_parser("export", help="replay stored runs to a backend (wandb, mlflow, ...)")
    export.add_argument("runs", nargs="*", help="run ids, id prefixes or names")
    export.add_argument("--all", action="store_true", help="every run in the store")
    export.add_argument(
        "--imported-from", default=None, metavar="SOURCE", help="every run imported from SOURCE (e.g. mlflow)"
    )
    export.add_argument("--sweep", default=None, help="a sweep (name or id): its run, then its trials")
    export.add_argument(
        "--where", default=None, metavar="EXPR", help="every run matching a filter expression"
    )
    export.add_argument("--to", required=True, help="exporter name, e.g. mlflow, wandb, tensorboard, neptune")
    export.add_argument("--base-dir", default=None)
    export.add_argument("--force", action="store_true", help="replace a run the target already holds")
    for keyword, flag in _EXPORTER_FLAGS.items():
        export.add_argument(flag, dest=keyword, default=None)
    export.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    export.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document on stdout: {"runs": [{"run_id", "name", "target", "points", '
        '"seconds", "adaptations", "error"}, ...]}, one entry per run (error null when it was exported)',
    )
    register_read_commands(commands)
    register_import(commands)
    register_dump(commands)
    register_edit(commands)
    args = parser.parse_args(argv)

    try:
        if hasattr(args, "handler"):
            return int(args.handler(args))
        if args.command == "demo":
            return _demo(args)
        return _export(args)
    except RuntelError as exc:
        print(f"runtel: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `runtel ls --json | head`: the reader has gone, nothing left to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 1
    finally:
        forget_reads()  # what the command listed is of no use to the next one, nor at exit


def _demo(args: argparse.Namespace) -> int:
    from runtel.demo import main as run_demo

    if not args.json:
        run_demo(base_dir=args.base_dir, epochs=args.epochs)
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # the demo's own messages; stdout holds only the JSON
        run = run_demo(base_dir=args.base_dir, epochs=args.epochs)
    print_json({"run_id": run.id, "name": run.name, "folder": str(run.dir)})
    return 0


def _export(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from runtel.api import exporter_factory
    from runtel.errors import ConfigError
    from runtel.replay import export_run
    from runtel.store.scan import READ_ERRORS, count_points

    chosen = [args.all, bool(args.runs), args.imported_from is not None, args.sweep is not None]
    if [*chosen, args.where is not None].count(True) != 1:
        raise ConfigError(
            "name the runs to export, or pass --all, --imported-from SOURCE, --sweep NAME or --where EXPR "
            "(one of them)"
        )
    store = open_store(args.base_dir)
    if args.where is not None:
        runs = store.runs(where=args.where)
        if not runs:
            raise ConfigError(f"no run in {str(store.base_dir)!r} matches --where {args.where!r}")
    elif args.imported_from is not None:
        runs = [run for run in store.runs() if run.metadata.get("imported_from") == args.imported_from]
        if not runs:
            raise ConfigError(f"no run in {str(store.base_dir)!r} was imported from {args.imported_from!r}")
    elif args.sweep is not None:
        runs = _sweep_in_order(store, args.sweep)
    else:
        runs = store.runs() if args.all else [open_run(store, key) for key in args.runs]
    options: dict[str, Any] = {key: getattr(args, key) for key in _EXPORTER_FLAGS if getattr(args, key)}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--option takes KEY=VALUE, got {item!r}")
        options[key] = value
    if args.force:
        options["force"] = True
    factory = exporter_factory(args.to)
    console = Console(stderr=True)
    failures = 0
    exported: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        for run in runs:
            try:
                total: int | None = count_points(run)
            except READ_ERRORS:  # a damaged index: export_run below names it
                total = None
            task = progress.add_task(escape(f"{run.name} → {args.to}"), total=total)
            outcome: dict[str, Any] = {"run_id": run.id, "name": run.name, "target": args.to}
            exported.append(outcome)
            try:
                result = export_run(run, factory(**options), progress=partial(progress.advance, task))
            except AlreadyExportedError as exc:
                failures += 1
                error = f"{type(exc).__name__}: {exc.detail}; pass --force to replace it"
                outcome.update(points=None, seconds=None, adaptations={}, error=error)
                console.print(f"[red]{escape(run.name)} ({run.id[:8]}): not exported: {escape(error)}")
                continue
            except Exception as exc:
                failures += 1
                error = f"{type(exc).__name__}: {exc}"
                outcome.update(points=None, seconds=None, adaptations={}, error=error)
                console.print(f"[red]{escape(run.name)} ({run.id[:8]}): not exported: {escape(error)}")
                continue
            outcome.update(result, error=None)
            rate = result["points"] / result["seconds"] if result["seconds"] else 0.0
            adapted = ", ".join(f"{k} {v['count']}" for k, v in result["adaptations"].items()) or "none"
            console.print(
                escape(
                    f"{run.name} ({run.id[:8]}): {result['points']} points in {result['seconds']:.2f}s "
                    f"({rate:,.0f}/s); adaptations: {adapted}"
                )
            )
            for problem in result["problems"]:
                console.print(f"[yellow]{escape(f'{run.name} ({run.id[:8]}): {problem}')}")
    if args.json:
        print_json({"runs": exported})
    return 1 if failures else 0


def _sweep_in_order(store: Any, key: str) -> list[Any]:
    """The sweep run first, so a backend's trial runs can point at it (MLflow's parent run)."""
    from runtel.sweep import sweep_runs

    sweep, trials = sweep_runs(store, key)
    return [*([sweep] if sweep is not None else []), *trials]


if __name__ == "__main__":
    sys.exit(main())
