"""``runtel ls --group-by FIELD --metric NAME``: mean ± std (and n, min, max) of the best value per group.

The runs are those ``runtel ls`` would list with the same filters (``--where`` included); the statistics
come from :func:`runtel.store.aggregate.aggregate` (its ``table()``), so the CLI and the Python API agree.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from runtel.cli_commands import format_columns, format_number, open_store, print_json, select_runs
from runtel.errors import ConfigError
from runtel.store.aggregate import aggregate
from runtel.store.scan import scan
from runtel.ui import data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group-by",
        action="append",
        default=None,
        metavar="FIELD",
        help="group runs by FIELD (a field of --where: params.<path>, project, status, tags...; repeatable "
        "or comma-separated) and print mean ± std of the best --metric value per group",
    )


def group_fields(values: list[str]) -> list[str]:
    """``--group-by a --group-by b,c`` as ``[a, b, c]``."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def list_groups(args: argparse.Namespace) -> int:
    fields = group_fields(args.group_by)
    if not fields:
        raise ConfigError("--group-by needs a field, e.g. --group-by params.lr")
    if not args.metric:
        raise ConfigError(
            "--group-by needs the metric to aggregate: add --metric NAME (e.g. --metric val/acc)"
        )
    if args.sort is not None:
        raise ConfigError("--group-by prints groups in the order of their key; drop --sort")
    listing = scan(open_store(args.base_dir).base_dir)
    unreadable: list[tuple[str, str]] = []
    kept = {
        row["id"]
        for row in data.filter_rows(
            (data.run_row(run) for run in select_runs(listing.runs, args.where, None, False, unreadable)),
            projects=[args.project] if args.project else (),
            statuses=[args.status] if args.status else (),
            tags=[args.tag] if args.tag else (),
            name=args.name or "",
        )
    }
    runs = [run for run in listing.runs if run.id in kept]
    results = [aggregate(runs, metric, fields) for metric in args.metric]
    if args.json:
        print_json(
            {
                "aggregates": [
                    {
                        "metric": result.metric,
                        "by": list(result.by),
                        "direction": result.direction,
                        "groups": result.table(),
                        "skipped": [{"name": s.name, "id": s.id, "reason": s.reason} for s in result.skipped],
                    }
                    for result in results
                ],
                "skipped": [{"folder": item.folder, "reason": item.reason} for item in listing.skipped],
                "unreadable": [{"folder": folder, "reason": why} for folder, why in unreadable],
            }
        )
        return 0
    out = sys.stdout
    for result in results:
        rows = result.table()
        out.write(
            f"{result.metric} by {', '.join(fields)}: {len(rows)} groups of {len(runs)} runs "
            f"(best = {result.direction}, std with ddof={result.ddof})\n"
        )
        header = (*fields, "runs", "n", "best mean ± std", "min", "max", "last mean ± std")
        cells = [
            (
                *(_cell(row[field]) for field in fields),
                str(row["runs"]),
                str(row["best_n"]),
                _plus_minus(row["best_mean"], row["best_std"], result.metric),
                format_number(row["best_min"], result.metric),
                format_number(row["best_max"], result.metric),
                _plus_minus(row["last_mean"], row["last_std"], result.metric),
            )
            for row in rows
        ]
        out.write(format_columns(header, cells, colour=None))
        for item in result.skipped:
            out.write(f"skipped {item.name} ({item.id[:8]}): {item.reason}\n")
    for folder in listing.skipped:
        out.write(f"skipped {folder.folder}/: {folder.reason}\n")
    for name, why in unreadable:
        out.write(f"unreadable {name}/: {why} (its fields count as missing in --where)\n")
    return 0


def _plus_minus(mean: float, std: float, metric: str) -> str:
    if math.isnan(std):
        return format_number(mean, metric)
    return f"{format_number(mean, metric)} ± {format_number(std, metric)}"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(no tags)"
    return format_number(value)
