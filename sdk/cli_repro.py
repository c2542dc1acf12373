"""The reproducibility part of ``runtel show``: code, command, interpreter and the console's last lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from runtel._terminal import plain
from runtel.errors import StoreCorruptError
from runtel.store.repro import console_tail, repro_summary

#: Console lines ``runtel show`` prints.
TAIL_LINES = 20


def repro_report(run_dir: Path) -> dict[str, Any]:
    """``{"environment": summary or None, "console_tail": [...], "repro_problems": [...]}``."""
    report: dict[str, Any] = {"environment": None, "console_tail": [], "repro_problems": []}
    try:
        summary = repro_summary(run_dir)
        report["environment"] = None if summary is None else summary.as_dict()
    except StoreCorruptError as exc:
        report["repro_problems"].append(str(exc))
    try:
        report["console_tail"] = console_tail(run_dir, TAIL_LINES)
    except StoreCorruptError as exc:
        report["repro_problems"].append(str(exc))
    return report


def print_repro(console: Console, report: dict[str, Any]) -> None:
    for problem in report["repro_problems"]:
        console.print(f"[red]{_shown(problem)}")
    env = report["environment"]
    if env is not None:
        if env["git_absent"]:
            code = f"no git ({_shown(env['git_absent'])})"
        else:
            state = "[yellow]dirty[/]" if env["dirty"] else "clean"
            code = (
                f"commit {_shown(plain(env['commit'] or '(none)')[:12])}  "
                f"branch {_shown(env['branch'] or '(detached)')}  {state}"
                + (
                    f" (diff: {_shown(env['diff_artifact'])}{', cut' if env['diff_cut'] else ''})"
                    if env["diff_artifact"]
                    else ""
                )
                + (f", {env['untracked']} untracked" if env["untracked"] else "")
                + (f"  remote {_shown(env['remote'])}" if env["remote"] else "")
            )
        console.print(f"code: {code}")
        torch = (
            f"  torch {_shown(env['torch'])} (CUDA {_shown(env['cuda'] or 'none')})" if env["torch"] else ""
        )
        packages = "—" if env["packages"] is None else str(env["packages"])
        console.print(f"python: {_shown(env['python'] or '—')}  packages: {packages}{torch}")
        console.print(f"command: {_shown(' '.join(env['command']) or '—')}  (in {_shown(env['cwd'] or '—')})")
    if report["console_tail"]:
        console.print(f"[bold]console[/] (last {len(report['console_tail'])} lines of output.log):")
        for line in report["console_tail"]:
            console.print(plain(line), highlight=False, markup=False)


def _shown(text: object) -> str:
    """An untrusted field as Rich markup that prints it as plain text."""
    return escape(plain(str(text)))
