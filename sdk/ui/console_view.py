"""The UI's console section: the last lines of each selected run's ``output.log``, live while it runs.

Its own section of the page (:func:`section`) and callback (:func:`register`), reading only through
:mod:`runtel.store.repro`. It polls with the page's ``poll`` interval and redraws only when a file's
size or time changed, since console output changes without the store's fingerprint changing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel._console import CONSOLE_FILE, STDERR_MARK
from runtel.store.repro import console_tail
from runtel.store.scan import READ_ERRORS, scan

if TYPE_CHECKING:
    from dash import Dash

#: Lines shown per run.
TAIL_LINES = 40
_STDERR = STDERR_MARK.decode()
CSS = """
.console { background: #0d1117; color: #e6edf3; font-size: 12px; padding: 8px; max-height: 360px;
  overflow: auto; white-space: pre-wrap; margin: 4px 0 10px; } .console .stderr { color: #ff7b72; }
"""


def section() -> Any:
    from dash import dcc, html

    return html.Section(
        [html.H2("Console"), dcc.Store(id="console-stamp"), html.Div(id="console", className="console-runs")]
    )


def register(app: Dash, base: Path) -> None:
    from dash import Input, Output, State, html, no_update

    @app.callback(
        Output("console", "children"),
        Output("console-stamp", "data"),
        Input("poll", "n_intervals"),
        Input("selected", "value"),
        State("console-stamp", "data"),
    )
    def console(_: Any, selected: Any, previous: Any) -> tuple[Any, Any]:
        runs = scan(base).resolve(selected)
        stamp = [[run.id, *_file_stamp(run.dir / CONSOLE_FILE)] for run in runs]
        if stamp == previous:
            return no_update, no_update
        if not runs:
            return html.Div("Select runs to see their console output.", className="muted"), stamp
        blocks: list[Any] = []
        for run in runs:
            try:
                lines = console_tail(run.dir, TAIL_LINES)
            except READ_ERRORS as exc:
                blocks.append(html.Div(f"{run.name}: {exc}", className="problem"))
                continue
            blocks.append(html.H3(f"{run.name} ({run.id[:8]})"))
            if not lines:
                blocks.append(html.Div("no console output captured", className="muted"))
                continue
            blocks.append(
                html.Pre(
                    [
                        html.Div(line, className="stderr" if line.startswith(_STDERR) else "stdout")
                        for line in lines
                    ],
                    className="console",
                    id={"type": "console-tail", "index": run.id},
                )
            )
        return blocks, stamp


def _file_stamp(path: Path) -> list[int]:
    try:
        stat = path.stat()
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]
