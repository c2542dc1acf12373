"""The read-only subcommands of ``runtel``: ``ls``, ``show``, ``compare``, ``verify`` and ``ui``.

Tables are drawn with rich; ``--json`` prints the same data as one JSON document (non-finite numbers as
``null``) for scripts. An unknown run (``RunNotFoundError``), a missing store folder or too few runs to
compare (``ConfigError``) become a message and exit status 1 in ``runtel.cli.main``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from runtel._terminal import plain, plain_row
from runtel.errors import ConfigError, MetricNotFoundError, RunNotFoundError
from runtel.records import flatten_params
from runtel.store import _layout
from runtel.store._blocks import SEGMENTS_FILE
from runtel.store._gcpause import collector_paused
from runtel.store._metrics import verify_folder
from runtel.store._series import CRC_DTYPE, CRC_FILE, RECORD_SIZE, SIDECAR_KEY, SeriesIntegrity
from runtel.store.query import Store, StoredRun
from runtel.store.scan import READ_ERRORS, reason, scan, summary_of
from runtel.ui import data

Handler = Callable[[argparse.Namespace], int]


def register(commands: Any) -> None:
    """Add the subcommands to ``commands`` (an argparse sub-parser set); each sets ``handler``."""
    ls = commands.add_parser("ls", help="list the runs in the store")
    ls.add_argument("--project", default=None)
    ls.add_argument("--status", default=None, help="completed, running, crashed, failed, killed")
    ls.add_argument("--tag", default=None)
    ls.add_argument("--name", default=None, help="substring of the run name, or an id prefix")
    ls.add_argument(
        "--metric",
        action="append",
        default=None,
        help="metric for the best column (repeatable; default: the two a run's summary ranks first, "
        "validation and accuracy/loss-like names before the rest)",
    )
    ls.add_argument("--sweep", default=None, help="a sweep's name or id: its trials, best first")
    ls.add_argument(
        "--where",
        default=None,
        metavar="EXPR",
        help="filter, e.g. \"params.lr < 1e-3 and 'baseline' in tags\"",
    )
    ls.add_argument(
        "--sort", default=None, metavar="FIELD", help="sort by a field, e.g. \"metrics['val/acc'].max\""
    )
    ls.add_argument("--desc", action="store_true", help="sort descending (runs without the field stay last)")
    from runtel.cli_group import add_arguments as add_group_arguments

    add_group_arguments(ls)
    _common(ls, list_runs)

    show = commands.add_parser("show", help="params, summary, exporters, artifacts and spans of one run")
    show.add_argument("run", help="run id, 8+ character id prefix, folder or name")
    _common(show, show_run)

    compare = commands.add_parser("compare", help="best/last/min/max of metrics across runs")
    compare.add_argument("runs", nargs="*", help="two or more runs (ids, prefixes or names)")
    compare.add_argument("--where", default=None, metavar="EXPR", help="compare the runs matching a filter")
    compare.add_argument("--metric", action="append", default=None, help="metric to compare (repeatable)")
    compare.add_argument("--mode", choices=("auto", "min", "max"), default="auto", help="direction of best")
    _common(compare, compare_runs)

    verify = commands.add_parser(
        "verify", help="check every stored series against its CRCs and every media file against its SHA-256"
    )
    verify.add_argument("runs", nargs="*", help="runs to check (ids, prefixes or names; default: all)")
    _common(verify, verify_runs)

    ui = commands.add_parser("ui", help="the comparison web UI (needs runtel[ui])")
    ui.add_argument("--base-dir", default=None, help="store folder (default: runtel_runs or RUNTEL_BASE_DIR)")
    ui.add_argument("--port", type=int, default=8052, help="0 picks a free port")
    ui.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback is warned")
    ui.add_argument("--report-dir", default=None, help="keep exported reports here (outside the store)")
    ui.add_argument("--debug", action="store_true", help="Dash's in-page error reports")
    ui.add_argument(
        "--allow-edits", action="store_true", help="let the page edit tags, notes and names (loopback only)"
    )
    ui.set_defaults(handler=launch_ui)


def _common(parser: argparse.ArgumentParser, handler: Handler) -> None:
    parser.add_argument(
        "--base-dir", default=None, help="store folder (default: runtel_runs or RUNTEL_BASE_DIR)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=handler)


def _adaptation_reports(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{exporter: {kind: {"count", "examples"}}}`` of live export, of each replay (``<name> replay``)
    and of an import (``<source> import``)."""
    reports: dict[str, dict[str, Any]] = {}
    imported = summary.get("import")
    if (
        isinstance(imported, dict)
        and isinstance(imported.get("adaptations"), dict)
        and imported["adaptations"]
    ):
        reports[f"{imported.get('source')} import"] = imported["adaptations"]
    for name, report in (summary.get("exporters") or {}).items():
        if isinstance(report, dict) and report.get("adaptations"):
            reports[str(name)] = report["adaptations"]
    for replay in summary.get("replays") or []:
        if isinstance(replay, dict) and replay.get("adaptations"):
            reports[f"{replay.get('exporter')} replay"] = replay["adaptations"]
    return reports


def open_store(base_dir: str | None) -> Store:
    """The store in ``base_dir``; a missing folder is an error, since a mistyped path would list nothing."""
    store = Store(base_dir)
    if not store.base_dir.is_dir():
        raise ConfigError(
            f"no runtel store at {str(store.base_dir)!r} (no such folder); "
            "pass --base-dir DIR or set RUNTEL_BASE_DIR"
        )
    return store


@collector_paused()
def list_runs(args: argparse.Namespace) -> int:
    if args.sweep is not None:
        if args.where is not None or args.sort is not None:
            raise ConfigError("--sweep lists trials best first; it does not combine with --where or --sort")
        return list_trials(args)
    if args.group_by:
        from runtel.cli_group import list_groups

        return list_groups(args)
    listing = scan(open_store(args.base_dir).base_dir)
    unreadable: list[tuple[str, str]] = []
    runs = select_runs(listing.runs, args.where, args.sort, args.desc, unreadable)
    rows = data.filter_rows(
        (data.run_row(run, args.metric) for run in runs),
        projects=[args.project] if args.project else (),
        statuses=[args.status] if args.status else (),
        tags=[args.tag] if args.tag else (),
        name=args.name or "",
    )
    if args.json:
        skipped = [{"folder": item.folder, "reason": item.reason} for item in listing.skipped]
        document: dict[str, Any] = {"runs": rows, "skipped": skipped}
        if args.where is not None or args.sort is not None:
            document["unreadable"] = [{"folder": folder, "reason": why} for folder, why in unreadable]
        print_json(document, indent=None)
        return 0
    header = ("name", "id", "project", "status", "start", "duration", "tags", "best")
    cells = [
        plain_row(
            (
                row["name"],
                row["id8"],
                row["project"],
                row["status"],
                row["started"],
                data.format_duration(row["duration"]),
                ",".join(
                    json.dumps(tag, ensure_ascii=False) if "," in tag or '"' in tag else tag
                    for tag in row["tags"]
                ),
                ", ".join(f"{name}={format_number(value, name)}" for name, value in row["best"].items()),
            )
        )
        for row in rows
    ]
    out = sys.stdout
    out.write(f"{len(rows)} runs\n")
    out.write(format_columns(header, cells, colour=3 if out.isatty() else None))
    for item in listing.skipped:
        out.write(plain(f"skipped {item.folder}/: {item.reason}") + "\n")
    for folder, why in unreadable:
        out.write(f"unreadable {folder}/: {why} (its fields count as missing in --where/--sort)\n")
    return 0


def select_runs(
    runs: list[StoredRun], where: str | None, sort: str | None, desc: bool, unreadable: list[tuple[str, str]]
) -> list[StoredRun]:
    """``--where`` and ``--sort``/``--desc`` of :mod:`runtel.store.where` (both checked before any read);
    ``unreadable`` receives the run folders whose summary or params they needed and could not read."""
    from runtel.store.where import compile_where, field_reader, sort_runs

    chosen = compile_where(where) if where is not None else None
    if sort is not None:
        field_reader(sort)  # its error before any read
    if chosen is not None:
        runs = chosen.select(runs, unreadable)
    if sort is not None:
        runs = sort_runs(runs, sort, descending=desc, unreadable=unreadable)
    elif desc:
        runs = runs[::-1]
    unreadable[:] = list(dict.fromkeys(unreadable))  # a file both needed is named once
    return runs


def format_columns(header: tuple[str, ...], cells: Sequence[tuple[str, ...]], colour: int | None) -> str:
    """A plain aligned table: rich lays out each cell in Python, too slow for 10,000 runs (see
    docs/benchmarks.md). ``colour`` is the status column to colour on a terminal, or None."""
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(header)]
    lines = ["  ".join(name.ljust(width) for name, width in zip(header, widths, strict=True)).rstrip()]
    for row in cells:
        shown = [value.ljust(width) for value, width in zip(row, widths, strict=True)]
        if colour is not None:
            code = {"completed": 32, "running": 34}.get(row[colour], 31)
            shown[colour] = f"\x1b[{code}m{shown[colour]}\x1b[0m"
        lines.append("  ".join(shown).rstrip())
    return "\n".join(lines) + "\n"


def list_trials(args: argparse.Namespace) -> int:
    """``runtel ls --sweep NAME``: one row per trial, best objective first."""
    from runtel.ui.sweep_data import param_names, sweep_table

    table = sweep_table(open_store(args.base_dir), args.sweep)
    if args.json:
        print_json({"runs": table.rows, "sweep": table.summary()})
        return 0
    from rich.table import Table

    params = param_names(table.rows)
    title = (
        f"sweep {args.sweep}: {len(table.rows)} trials, best first by {table.objective or '(no objective)'}"
    )
    view = Table(title=title, title_justify="left")
    for column in ("trial", "name", "id", "status", "state", "objective", *params):
        view.add_column(column, no_wrap=column in ("trial", "id", "status", "state"), overflow="fold")
    for row in table.rows:
        view.add_row(
            format_number(row["trial"]),
            row["name"],
            row["id8"],
            _status(row["status"]),
            row["state"],
            format_number(row["objective"]),
            *(format_number(row["params"].get(name)) for name in params),
        )
    _console().print(view)
    return 0


def show_run(args: argparse.Namespace) -> int:
    from runtel.cli_repro import print_repro, repro_report  # rich's console and git's reader: not for ls

    run = open_run(open_store(args.base_dir), args.run)
    card = data.run_card(run)
    summary = summary_of(run)
    report = {
        "run": {**data.run_row(run), "problems": card["problems"]},
        "params": data.params_of(run),
        "metrics": summary.get("metrics", {}),
        "error": card["error"],
        "exporters": card["exporters"],
        "exporters_live": card["live"],
        "adaptations": _adaptation_reports(summary),
        "replays": summary.get("replays", []),
        "artifacts": data.artifact_rows(run),
        "media": _media_counts(run),
        "spans": data.span_rows(run),
        **repro_report(run.dir),
    }
    if run.sweep is not None and run.sweep.role == "sweep":
        from runtel.ui.sweep_data import sweep_table

        report["sweep"] = sweep_table(open_store(args.base_dir), run.sweep.id).summary()
    if args.json:
        print_json(report)
        return 0
    from rich.table import Table

    console = _console()
    row = report["run"]
    console.print(
        f"[bold]{_shown(row['name'])}[/] {_shown(row['id'])}  {_status(row['status'])}  "
        f"project {_shown(row['project'] or '—')}  "
        f"started {row['started']}  duration {data.format_duration(row['duration']) or '—'}  "
        f"points {row['points'] if row['points'] is not None else '—'}"
    )
    if row["tags"] or row["note"]:
        note = f"  note: {_shown(row['note'])}" if row["note"] else ""
        console.print(f"tags {_shown(', '.join(row['tags']) or '—')}{note}")
    for problem in card["problems"]:
        console.print(f"[red]{_shown(problem)}")
    if card["error"]:
        console.print(f"[red]error: {_shown(str(card['error']).splitlines()[-1])}")
    if "sweep" in report:
        study = report["sweep"]
        console.print(
            f"sweep: {study['trials']} trials ({', '.join(f'{n} {k}' for k, n in study['states'].items())}); "
            f"best trial {format_number(study['best_trial'])}: "
            f"{study['objective']} = {format_number(study['best'])}"
            f" (runtel ls --sweep {escape(row['name'])})"
        )
    params = Table("parameter", "value", title="parameters", title_justify="left")
    for key, value in flatten_params(report["params"]).items():
        params.add_row(
            escape(key), escape(value if isinstance(value, str) else json.dumps(value, default=str))
        )
    console.print(params)
    metrics = Table("metric", "count", "last", "min", "max", title="metrics", title_justify="left")
    for name, stats in report["metrics"].items():
        metrics.add_row(
            escape(name),
            format_number(stats.get("count")),
            *(format_number(stats.get(key), name) for key in ("last", "min", "max")),
        )
    console.print(metrics)
    exporters = Table("exporter", "status", "adaptations", "error", title="exporters", title_justify="left")
    for name, item in card["exporters"].items():
        adapted = ", ".join(f"{kind} {count}" for kind, count in item["adaptations"].items()) or "none"
        exporters.add_row(
            escape(name), escape(item["status"]), escape(adapted), escape(str(item["error"] or ""))
        )
    console.print(exporters)
    if card["live"]:
        live = Table(
            "exporter",
            "queue",
            "delivered",
            "undelivered",
            "retries",
            title="exporters (live, last heartbeat)",
            title_justify="left",
        )
        for name, reading in card["live"].items():
            live.add_row(
                escape(name),
                *(
                    f"{reading[key]:,}"
                    for key in ("queue_depth", "points_delivered", "points_undelivered", "retries")
                ),
            )
        console.print(live)
    adaptations = Table(
        "exporter", "adaptation", "count", "example", title="adaptations", title_justify="left"
    )
    for name, kinds in report["adaptations"].items():
        for kind, item in kinds.items():
            example = json.dumps(item["examples"][0], default=str) if item["examples"] else ""
            adaptations.add_row(escape(name), escape(kind), f"{item['count']:,}", escape(example))
    if adaptations.row_count:
        console.print(adaptations)
    for replay in report["replays"]:
        console.print(
            escape(
                f"replayed to {replay.get('exporter')}: {replay.get('status')}, {replay.get('points')} points"
                + (f", {replay['error']}" if replay.get("error") else "")
            )
        )
    artifacts = Table("artifact", "version", "sha256", "size", title="artifacts", title_justify="left")
    for item in report["artifacts"]:
        artifacts.add_row(
            escape(item["name"]), f"v{item['version']}", item["sha256"][:12], human_bytes(item["size"])
        )
    console.print(artifacts)
    if report["media"]:
        media = Table("media", "items", title="media", title_justify="left")
        for name, count in report["media"].items():
            media.add_row(escape(name), f"{count:,}")
        console.print(media)
    spans = Table(
        "span", "kind", "start", "duration", "steps", title="epochs and phases", title_justify="left"
    )
    for item in report["spans"]:
        spans.add_row(
            escape(item["name"]),
            escape(item["kind"]),
            f"{item['start']:.3f}s",
            f"{item['duration']:.3f}s",
            item["steps"],
        )
    console.print(spans)
    print_repro(console, report)
    return 0


def compare_runs(args: argparse.Namespace) -> int:
    store = open_store(args.base_dir)
    keys: list[str | StoredRun] = list(args.runs)
    if args.where is not None:
        if keys:
            raise ConfigError("compare takes run names or --where EXPR, not both")
        keys = list(store.runs(where=args.where))
    if len(keys) < 2:
        shown = ", ".join(repr(key if isinstance(key, str) else key.name) for key in keys)
        selector = f" matching --where {args.where!r}" if args.where is not None else ""
        raise ConfigError(f"compare needs two or more runs{selector}, got {len(keys)} ({shown})")
    runs, rows, skipped = [], [], []
    for key in keys:
        try:
            run = key if isinstance(key, StoredRun) else open_run(store, key)
            rows.extend(store.compare([run], args.metric, args.mode))
        except READ_ERRORS as exc:
            if isinstance(exc, RunNotFoundError):
                raise
            skipped.append(
                {"run": key if isinstance(key, str) else key.name, "reason": reason(exc, store.base_dir)}
            )
            continue
        runs.append(run)
    if args.metric and not rows:
        raise MetricNotFoundError(f"none of the runs has points for {', '.join(map(repr, args.metric))}")
    differing = [row for row in data.params_rows(runs) if row["differs"]]
    if args.json:
        params = [
            {"key": row["key"], "values": dict(zip([r.id for r in runs], row["values"], strict=True))}
            for row in differing
        ]
        print_json({"metrics": rows, "params_differing": params, "skipped": skipped})
        return 0
    from rich.table import Table

    console = _console()
    table = Table(
        "run", "metric", "best", "step", "last", "min", "max", "count", title="metrics", title_justify="left"
    )
    for row in rows:
        table.add_row(
            escape(f"{row['name']} ({row['run_id'][:8]})"),
            escape(row["metric"]),
            format_number(row["best"], row["metric"]),
            format_number(row["best_step"]),
            *(format_number(row[key], row["metric"]) for key in ("last", "min", "max")),
            format_number(row["count"]),
        )
    console.print(table)
    diff = Table(
        "parameter", *[escape(f"{run.name} ({run.id[:8]})") for run in runs], title="parameters that differ"
    )
    for row in differing:
        diff.add_row(
            escape(row["key"]), *("—" if value is None else escape(str(value)) for value in row["values"])
        )
    console.print(diff)
    for item in skipped:
        console.print(f"[yellow]skipped {escape(item['run'])}: {escape(item['reason'])}")
    return 0


def verify_runs(args: argparse.Namespace) -> int:
    """Exit status 1 when a series is damaged, naming its file and the damaged byte range."""
    store = open_store(args.base_dir)
    runs = [open_run(store, key) for key in args.runs] if args.runs else store.runs()
    results: list[tuple[StoredRun, int, str, SeriesIntegrity]] = []
    for run in runs:
        finished = run.status != "running"  # a live writer's newest block has no CRC yet
        for rank in run.ranks():
            folder = run.dir if rank == 0 else run.dir / "ranks" / str(rank)
            try:
                checks = verify_folder(folder / _layout.METRICS_DIR, finished=finished)
            except (OSError, ValueError) as exc:  # an unreadable index damages the whole folder
                index = folder / _layout.METRICS_DIR / _layout.SERIES_INDEX
                problem = f"unreadable: {type(exc).__name__}: {exc}"
                checks = {"*": SeriesIntegrity(index, "damaged", 0, 0, damage_at=(0, 0), problem=problem)}
            for metric, check in checks.items():
                results.append((run, rank, metric, check))
    media = {run.id: _media_problems(run) for run in runs}
    damaged = [item for item in results if item[3].status == "damaged"]
    if args.json:
        print_json(
            [
                {
                    "run": run.name,
                    "id": run.id,
                    "rank": rank,
                    "metric": metric,
                    "file": str(check.path),
                    "status": check.status,
                    "records": check.records,
                    "damaged_bytes": check.damage_at,
                    "problem": check.problem,
                }
                for run, rank, metric, check in results
            ]
            + [
                {"run": run.name, "id": run.id, "media": problem, "status": "damaged"}
                for run in runs
                for problem in media[run.id]
            ]
        )
        return 1 if damaged or any(media.values()) else 0
    console = _console()
    for run, _, metric, check in damaged:
        start, end = check.damage_at or (0, 0)
        where = (
            f"(entries {start // CRC_DTYPE.itemsize}-{max(end - 1, start) // CRC_DTYPE.itemsize})"
            if check.path.name in (CRC_FILE, SEGMENTS_FILE)
            else f"(records {start // RECORD_SIZE}-{max(end - 1, start) // RECORD_SIZE})"
        )
        label = "the CRC sidecar" if metric == SIDECAR_KEY else repr(metric)
        console.print(
            "[red]damaged[/] "
            + escape(
                f"{run.name} ({run.id[:8]}) {label}: {check.path} bytes {start}-{end} {where}: "
                f"{check.problem}"
            )
        )
    for run in runs:
        for problem in media[run.id]:
            console.print("[red]damaged[/] " + escape(f"{run.name} ({run.id[:8]}) media {problem}"))
    unverified = sum(check.status == "unverified" for *_, check in results)
    bad_media = sum(map(len, media.values()))
    console.print(
        f"{len(runs)} runs, {len(results)} series: {len(results) - len(damaged) - unverified} ok, "
        f"{unverified} unverified (bytes no CRC covers), {len(damaged)} damaged; "
        f"{bad_media} media files damaged"
    )
    return 1 if damaged or bad_media else 0


def _media_counts(run: StoredRun) -> dict[str, int]:
    """Items per media key; ``{}`` when ``events.jsonl`` is damaged (the problems line names it)."""
    try:
        return run.media_names()
    except READ_ERRORS:
        return {}


def _media_problems(run: StoredRun) -> list[str]:
    """Media files of ``run`` that are missing or fail their SHA-256 (an unreadable index is one)."""
    from runtel.store.media import media_records, verify_media

    try:
        return verify_media(run.dir, media_records(run))
    except READ_ERRORS as exc:
        return [f"events.jsonl unreadable: {exc}"]


def launch_ui(args: argparse.Namespace) -> int:
    from runtel.tracking.comparison_ui import launch_comparison_ui

    open_store(args.base_dir)
    launch_comparison_ui(
        port=args.port,
        base_dir=args.base_dir,
        host=args.host,
        debug=args.debug,
        report_dir=args.report_dir,
        allow_edits=args.allow_edits,
    )
    return 0


def escape(text: str) -> str:
    """Rich markup escaped, rich imported on first use: ``runtel ls`` prints no rich table."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or redirected: do not cut columns to a guessed 80
        console.width = max(console.width, 160)
    return console


def _status(status: str) -> str:
    colour = {"completed": "green", "running": "blue"}.get(status, "red")
    return f"[{colour}]{_shown(status)}[/]"


def format_number(value: Any, metric: str | None = None) -> str:
    """A table cell: byte series (``system/memory.used``...) in KiB/MiB/GiB, other floats to 6 digits."""
    if isinstance(value, (int, float)) and metric is not None and _unit(metric) == "By":
        return human_bytes(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


@functools.lru_cache(maxsize=4096)
def _unit(metric: str) -> str | None:
    """Cached: a table of 10,000 runs asks about the same few metrics in every row."""
    from runtel.system import series_unit

    return series_unit(metric)


def human_bytes(size: float) -> str:
    """``2191710000`` as ``2.04 GiB`` (binary units); below 1 KiB the exact number of bytes."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    if not math.isfinite(size) or abs(size) < 1024:
        return f"{size:g} B"
    power = min(int(math.log(abs(size), 1024)), len(units) - 1)
    return f"{size / 1024**power:.2f} {units[power]}"


def _shown(text: object) -> str:
    """A field read from the store as Rich markup printing it as plain text (no terminal escapes)."""
    return escape(plain(str(text)))


def open_run(store: Store, key: str, *, unique: bool = False) -> StoredRun:
    """``store.run(key)``; when nothing matches a short hex key, the message names the 8-character rule.
    ``unique`` (commands that change a run) refuses a name several runs have."""
    from runtel.store.scan import lookup

    try:
        return lookup(store.base_dir, key, unique=True) if unique else store.run(key)
    except RunNotFoundError as exc:
        if len(key) < 8 and all(c in "0123456789abcdef" for c in key.lower()):
            raise RunNotFoundError(
                f"{exc}; an id prefix needs at least 8 characters ({key!r} has {len(key)}): "
                "pass 8 or more, the full id, the folder name or the run name"
            ) from None
        raise


def print_json(document: Any, *, indent: int | None = 2) -> None:
    """``document`` as JSON on stdout, NaN and infinities as ``null``; ``indent=None`` prints one line
    with the C encoder (``ls --json`` of 10,000 runs), where indenting runs the pure-Python one."""
    text = json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=True, default=str)
    if "NaN" in text or "Infinity" in text:
        text = _NON_FINITE.sub(lambda match: "null" if match.group(1) else match.group(0), text)
    print(text)


#: A JSON string (kept as it is), or a NaN/infinity token outside strings (made ``null``).
_NON_FINITE = re.compile(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')
