"""The Dash app of the comparison UI: layout and callbacks over :mod:`runtel.ui.data`, reading only.

Every callback re-reads the store (so live runs update, driven by a polling ``dcc.Interval``), trusts a
run id only once it is found in the current listing, and turns a damaged run into a visible note. Metric
charts are re-queried on zoom: the server sends the min/max of each pixel bucket of the visible range.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel.errors import MissingExtraError
from runtel.store.query import StoredRun
from runtel.store.scan import READ_ERRORS, Listing, scan
from runtel.ui import console_view, data, group_view, media_view, sweep_view

if TYPE_CHECKING:
    from dash import Dash
    from plotly.graph_objects import Figure

#: How often the page asks whether the store changed (milliseconds).
POLL_MS = 2000
_SELECT_HINT = "Select runs in the Compare box above."
_CSS = """
body { font-family: 'DejaVu Sans', system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 10px 20px; display: flex; gap: 16px;
  align-items: baseline; }
header h1 { font-size: 18px; margin: 0; } header code { color: #c9d1d9; }
main { padding: 12px 20px; } section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
  padding: 10px 14px; margin-bottom: 14px; } h2 { font-size: 15px; margin: 4px 0 10px; }
.controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
.controls > * { min-width: 170px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid #eaeef2; padding: 4px 8px; text-align: left;
  font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; } tr.selected td { background: #ddf4ff; }
tr.param-differs td { background: #fff8c5; } tr.param-differs td:first-child { font-weight: bold; }
.status { border-radius: 10px; padding: 1px 8px; font-size: 12px; color: #fff; background: #6e7781; }
.status-completed { background: #1a7f37; } .status-running { background: #0969da; }
.status-crashed, .status-failed, .status-killed, .status-unreadable { background: #cf222e; }
.note { color: #9a6700; font-size: 13px; margin: 4px 0; } .problem { color: #cf222e; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; min-width: 220px; font-size: 13px; }
.card h3 { font-size: 14px; margin: 0 0 6px; } .muted { color: #57606a; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 10px; }
"""


def create_app(
    base_dir: str | os.PathLike[str],
    *,
    report_dir: str | os.PathLike[str] | None = None,
    allow_edits: bool = False,
) -> Dash:
    """The comparison UI over the store in ``base_dir``; serve it with :func:`runtel.ui.server.serve`.

    Read-only unless ``allow_edits``: then a panel edits tags, note and name (loopback only, with a
    per-launch token; see :mod:`runtel.ui.edits_view`).

    Reports exported from the page go to a temporary folder that is removed after the download, or
    are kept in ``report_dir`` when given (which must lie outside the store: the UI never writes there).
    """
    if importlib.util.find_spec("dash") is None or importlib.util.find_spec("plotly") is None:
        raise MissingExtraError("the comparison UI needs dash and plotly: pip install runtel[ui]")
    from dash import Dash

    from runtel.ui.server import harden

    base = Path(base_dir).absolute()
    reports = Path(report_dir).absolute() if report_dir is not None else None
    if reports is not None and reports.is_relative_to(base):
        raise ValueError(
            f"report_dir {str(reports)!r} lies inside the store {str(base)!r}; pick another folder"
        )
    app = Dash(
        __name__,
        title="runtel · compare runs",
        serve_locally=True,
        assets_folder=str(Path(__file__).with_name("_no_assets")),
        include_assets_files=False,
        update_title="",
    )
    css = _CSS + media_view.CSS + console_view.CSS
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + css + "</style>")
    app.layout = _layout(base)
    _register(app, base, reports)
    sweep_view.register(app, base)
    group_view.register(app, base)
    media_view.register(app, base)
    console_view.register(app, base)
    if allow_edits:
        from runtel.ui import edits_view

        edits_view.install(app, base)
    harden(app.server)
    return app


def _layout(base: Path) -> Any:
    from dash import dcc, html

    def dropdown(id_: str, placeholder: str, **extra: Any) -> Any:
        return dcc.Dropdown(id=id_, multi=True, placeholder=placeholder, options=[], **extra)

    return html.Div(
        [
            dcc.Location(id="url", refresh=False),
            dcc.Interval(id="poll", interval=POLL_MS),
            dcc.Store(id="stamp"),
            dcc.Store(id="tick"),
            html.Header([html.H1("runtel · compare runs"), html.Code(str(base))]),
            html.Main(
                [
                    html.Section(
                        [
                            html.H2("Runs"),
                            html.Div(
                                [
                                    dropdown("f-project", "project"),
                                    dropdown("f-status", "status"),
                                    dropdown("f-tag", "tag"),
                                    dcc.Input(
                                        id="f-name",
                                        placeholder=FILTER_HINT,
                                        debounce=True,
                                        type="text",
                                    ),
                                    dcc.Dropdown(
                                        id="sort-key",
                                        options=[
                                            {"label": f"sort: {key}", "value": key} for key in data.SORT_KEYS
                                        ],
                                        value="start",
                                        clearable=False,
                                    ),
                                    dcc.Checklist(
                                        id="sort-desc", options=[{"label": " descending", "value": "d"}]
                                    ),
                                ],
                                className="controls",
                            ),
                            html.Div(id="notes"),
                            html.Div(id="runs-table"),
                            html.Div(
                                [html.Strong("Compare "), dropdown("selected", "select runs to compare")],
                                style={"marginTop": "10px"},
                            ),
                        ]
                    ),
                    html.Section([html.H2("Summary"), html.Div(id="cards", className="cards")]),
                    html.Section(
                        [
                            html.H2("Metrics"),
                            html.Div(
                                [
                                    dropdown("metrics", "metrics", style={"minWidth": "320px"}),
                                    dcc.RadioItems(
                                        id="x-axis",
                                        options=[
                                            {"label": " step ", "value": "step"},
                                            {"label": " wall time ", "value": "time"},
                                        ],
                                        value="step",
                                        inline=True,
                                    ),
                                    dcc.Checklist(
                                        id="y-log", options=[{"label": " log scale", "value": "log"}]
                                    ),
                                    html.Div(
                                        [
                                            html.Span("smoothing (EMA)", className="muted"),
                                            dcc.Slider(
                                                id="smoothing",
                                                min=0,
                                                max=0.99,
                                                step=0.01,
                                                value=0,
                                                marks={0: "0", 0.5: "0.5", 0.9: "0.9", 0.99: "0.99"},
                                            ),
                                        ],
                                        style={"minWidth": "280px"},
                                    ),
                                ],
                                className="controls",
                            ),
                            html.Div(id="charts", className="charts"),
                        ]
                    ),
                    media_view.section(),
                    html.Section([html.H2("Best values"), html.Div(id="best", className="charts")]),
                    html.Section([html.H2("Hyperparameters"), html.Div(id="params")]),
                    html.Section([html.H2("Epochs and phases"), html.Div(id="spans")]),
                    html.Section([html.H2("Artifacts"), html.Div(id="artifacts")]),
                    console_view.section(),
                    sweep_view.section(),
                    group_view.section(),
                    html.Section(
                        [
                            html.H2("Report"),
                            html.Button("Export comparison report (HTML)", id="export"),
                            html.Span(id="export-status", className="muted", style={"marginLeft": "10px"}),
                            dcc.Download(id="download"),
                        ]
                    ),
                ]
            ),
        ]
    )


def _register(app: Dash, base: Path, reports: Path | None) -> None:
    from dash import MATCH, Input, Output, State, ctx, html, no_update

    def listing() -> Listing:
        return scan(base)

    @app.callback(
        Output("stamp", "data"),
        Output("tick", "data"),
        Input("poll", "n_intervals"),
        State("selected", "value"),
        State("stamp", "data"),
    )
    def tick(_: int | None, selected: Any, previous: Any) -> tuple[Any, Any]:
        """Bump ``tick`` only when the store changed under the same selection (a new selection already
        re-renders), so a page that just loaded is not drawn twice and a fresh zoom is not overwritten.
        The stamp covers every listed run, selected or not (an empty selection counts), so each row of
        the runs table stays live."""
        found = listing()
        seen = {
            "runs": [run.id for run in found.resolve(selected)],
            "stamp": data.fingerprint(base, found.runs),
        }
        if seen == previous:
            return no_update, no_update
        changed = isinstance(previous, dict) and previous.get("runs") == seen["runs"]
        return seen, seen["stamp"] if changed else no_update

    @app.callback(
        Output("runs-table", "children"),
        Output("notes", "children"),
        Output("selected", "options"),
        Output("f-project", "options"),
        Output("f-status", "options"),
        Output("f-tag", "options"),
        Output("selected", "value"),
        Input("url", "search"),
        Input("tick", "data"),
        Input("f-project", "value"),
        Input("f-status", "value"),
        Input("f-tag", "value"),
        Input("f-name", "value"),
        Input("sort-key", "value"),
        Input("sort-desc", "value"),
        Input("selected", "value"),
    )
    def runs_table(
        search: Any,
        _: Any,
        projects: Any,
        statuses: Any,
        tags: Any,
        name: Any,
        key: Any,
        desc: Any,
        selected: Any,
    ) -> tuple[Any, ...]:
        found = listing()
        rows = [data.run_row(run) for run in found.runs]
        box = data.filter_box(found.runs, name if isinstance(name, str) else "")
        kept_ids = {run.id for run in box.runs}
        from_url = _ids_in(search) if ctx.triggered_id in (None, "url") else []
        if from_url:  # options and value change together, so the dropdown keeps the value
            selected = [run.id for run in found.resolve(from_url)]
        chosen = {run.id for run in found.resolve(selected)}
        shown = data.sort_rows(
            data.filter_rows(
                [row for row in rows if row["id"] in kept_ids],
                projects=selected_strings(projects),
                statuses=selected_strings(statuses),
                tags=selected_strings(tags),
                name=box.name,
            ),
            key if isinstance(key, str) else "start",
            descending=bool(desc),
        )
        options = [
            {"label": f"{row['name']} ({row['id8']}) · {row['status']}", "value": row["id"]}
            for row in rows
            if row in shown or row["id"] in chosen
        ]
        return (
            _runs_table(shown, chosen, len(rows)),
            [
                *([html.Pre(box.error, id="filter-error", className="problem")] if box.error else []),
                *(html.Div(f"Unreadable {note}", className="note") for note in box.unreadable),
                *(
                    html.Div(f"Skipped {item.folder}/: {item.reason}", className="note")
                    for item in found.skipped
                ),
            ],
            options,
            _choices(row["project"] for row in rows),
            _choices(row["status"] for row in rows),
            _choices(tag for row in rows for tag in row["tags"]),
            selected if from_url else no_update,
        )

    @app.callback(
        Output("metrics", "options"),
        Output("metrics", "value"),
        Input("selected", "value"),
        Input("tick", "data"),
        State("metrics", "value"),
    )
    def metric_choices(selected: Any, _: Any, current: Any) -> tuple[Any, Any]:
        names = data.metric_names(listing().resolve(selected))
        keep = [name for name in selected_strings(current) if name in names]
        if not keep:
            keep = [name for name in names if not name.startswith("system/")][:2]
        return [{"label": name, "value": name} for name in names], (
            no_update if keep == selected_strings(current) else keep
        )

    @app.callback(Output("charts", "children"), Input("metrics", "value"))
    def chart_slots(metrics: Any) -> list[Any]:
        from dash import dcc

        return [
            html.Div(
                [
                    dcc.Graph(id={"type": "metric-graph", "index": name}, config={"displaylogo": False}),
                    dcc.Store(id={"type": "metric-range", "index": name}),
                ]
            )
            for name in selected_strings(metrics)
        ]

    @app.callback(
        Output({"type": "metric-graph", "index": MATCH}, "figure"),
        Output({"type": "metric-range", "index": MATCH}, "data"),
        Input({"type": "metric-graph", "index": MATCH}, "relayoutData"),
        Input("selected", "value"),
        Input("x-axis", "value"),
        Input("y-log", "value"),
        Input("smoothing", "value"),
        Input("tick", "data"),
        State({"type": "metric-range", "index": MATCH}, "data"),
        State({"type": "metric-graph", "index": MATCH}, "id"),
    )
    def metric_chart(
        relayout: Any, selected: Any, x_axis: Any, log: Any, smoothing: Any, _: Any, current: Any, graph: Any
    ) -> tuple[Any, Any]:
        x_range = _range_after(ctx.triggered_id, relayout, current)
        if x_range is no_update:
            return no_update, no_update
        axis: data.XAxis = "time" if x_axis == "time" else "step"
        weight = float(smoothing) if isinstance(smoothing, (int, float)) else 0.0
        runs = listing().resolve(selected)
        figure = metric_figure(runs, str(graph["index"]), axis, x_range, bool(log), weight)
        return figure, x_range

    @app.callback(
        Output("cards", "children"),
        Output("params", "children"),
        Output("spans", "children"),
        Output("artifacts", "children"),
        Input("selected", "value"),
        Input("tick", "data"),
    )
    def details(selected: Any, _: Any) -> tuple[Any, ...]:
        runs = listing().resolve(selected)
        if not runs:
            hint = html.Div(_SELECT_HINT, className="muted")
            return hint, hint, hint, hint
        return (
            [_card(data.run_card(run)) for run in runs],
            _params_table(runs),
            [_span_chart(run) for run in runs],
            _artifacts_table(runs),
        )

    @app.callback(
        Output("best", "children"),
        Input("selected", "value"),
        Input("metrics", "value"),
        Input("tick", "data"),
    )
    def best(selected: Any, metrics: Any, _: Any) -> list[Any]:
        from dash import dcc

        values = data.best_values(listing().resolve(selected), selected_strings(metrics))
        return [dcc.Graph(figure=_best_figure(metric, items)) for metric, items in values.items()]

    @app.callback(
        Output("download", "data"),
        Output("export-status", "children"),
        Input("export", "n_clicks"),
        State("selected", "value"),
        State("metrics", "value"),
        prevent_initial_call=True,
    )
    def export(_: Any, selected: Any, metrics: Any) -> tuple[Any, str]:
        runs = listing().resolve(selected)
        if not runs:
            return no_update, _SELECT_HINT
        try:
            chosen = selected_strings(metrics) or None
            content = _export_report(base, reports, [run.id for run in runs], chosen)
        except (*READ_ERRORS, ImportError) as exc:
            return no_update, f"Report not written: {exc}"
        return {"content": content, "filename": "comparison.html", "type": "text/html"}, (
            f"Report of {len(runs)} runs ready."
        )


def metric_figure(
    runs: Sequence[StoredRun],
    metric: str,
    x_axis: data.XAxis,
    x_range: list[float] | None,
    log: bool,
    smoothing: float,
) -> Figure:
    """One metric, one line per run, each downsampled over the visible x-range."""
    import plotly.graph_objects as go

    figure = go.Figure()
    notes = []
    for run in runs:
        if metric not in data.metric_names([run]):
            continue
        try:
            view = data.series_view(
                run,
                metric,
                x_axis=x_axis,
                x_range=(x_range[0], x_range[1]) if x_range else None,
                smoothing=smoothing,
            )
        except READ_ERRORS as exc:
            notes.append(f"{run.name}: {exc}")
            continue
        label = f"{run.name} ({run.id[:8]})" + (f" · EMA {smoothing:g}" if smoothing else "")
        mode = "lines" if view.x.size > 1 else "markers"  # a lone point has no line to draw
        figure.add_scatter(x=view.x, y=view.y, mode=mode, name=view.label(label))
    figure.update_layout(
        title={"text": metric, "x": 0.01},
        height=380,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.18},
        uirevision=f"{metric}-{x_axis}",
        xaxis={"title": {"text": "step" if x_axis == "step" else "seconds since start"}},
        yaxis={"type": "log" if log else "linear", "uirevision": f"{x_axis}-{log}"},
        showlegend=True,
    )
    if x_range:
        figure.update_xaxes(range=x_range, autorange=False)
    message = "; ".join(notes) or ("" if runs else _SELECT_HINT)
    if message:
        figure.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return figure


def _range_after(trigger: Any, relayout: Any, current: Any) -> Any:
    """The x-range to query after ``trigger``: a zoom sets it, autorange clears it, other events keep it."""
    from dash import no_update

    kept = current if isinstance(current, list) and len(current) == 2 else None
    if not isinstance(trigger, dict):
        return None if trigger == "x-axis" else kept
    if not isinstance(relayout, dict):
        return no_update
    bounds = relayout.get("xaxis.range")
    if bounds is None and "xaxis.range[0]" in relayout:
        bounds = [relayout.get("xaxis.range[0]"), relayout.get("xaxis.range[1]")]
    if isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds):
        return sorted(float(b) for b in bounds)
    if relayout.get("xaxis.autorange"):
        return None
    return no_update


#: The filter box's placeholder: it takes a name, an id prefix or a filter expression.
FILTER_HINT = "name, id or filter: params.lr < 1e-3 and 'baseline' in tags"


def _runs_table(rows: list[dict[str, Any]], chosen: set[str], total: int) -> Any:
    from dash import html

    if not rows:
        return html.Div(f"No runs match ({total} in the store).", className="muted")
    head = ["", "name", "id", "project", "status", "started", "duration", "points", "tags", "best"]
    body = []
    for row in rows:
        best = ", ".join(f"{name} {value:.4g}" for name, value in row["best"].items())
        problems = [html.Div(problem, className="problem") for problem in row["problems"]]
        body.append(
            html.Tr(
                [
                    html.Td("✓" if row["id"] in chosen else ""),
                    html.Td([row["name"], *problems]),
                    html.Td(html.Code(row["id8"])),
                    html.Td(row["project"]),
                    html.Td(_status(row["status"])),
                    html.Td(row["started"]),
                    html.Td(data.format_duration(row["duration"])),
                    html.Td("" if row["points"] is None else f"{row['points']:,}"),
                    html.Td(", ".join(row["tags"])),
                    html.Td(best),
                ],
                className="selected" if row["id"] in chosen else "",
            )
        )
    return html.Table([html.Thead(html.Tr([html.Th(name) for name in head])), html.Tbody(body)])


def _status(status: str) -> Any:
    from dash import html

    hint = "the writing process died without finishing the run" if status == "crashed" else None
    return html.Span(status, className=f"status status-{status}", title=hint)


def _card(card: dict[str, Any]) -> Any:
    from dash import html

    exporters = [
        html.Div(
            f"{name}: {item['status']}"
            + (f", {sum(item['adaptations'].values())} adaptations" if item["adaptations"] else "")
            + (f" ({item['error']})" if item["error"] else ""),
            className="muted",
        )
        for name, item in card["exporters"].items()
    ]
    return html.Div(
        [
            html.H3([card["name"], " ", _status(card["status"])]),
            html.Div(f"duration {data.format_duration(card['duration']) or '—'}"),
            html.Div(f"points {card['points']:,}" if card["points"] is not None else "points —"),
            html.Div(f"adaptations {card['adaptations']}"),
            *exporters,
            html.Div(str(card["error"]).splitlines()[-1], className="problem") if card["error"] else None,
            *(html.Div(problem, className="problem") for problem in card["problems"]),
        ],
        className="card",
    )


def _params_table(runs: Sequence[StoredRun]) -> Any:
    from dash import html

    rows = data.params_rows(runs)
    if not rows:
        return html.Div("No hyperparameters logged.", className="muted")
    differing = sum(row["differs"] for row in rows)
    head = html.Tr([html.Th("parameter"), *[html.Th(f"{run.name} ({run.id[:8]})") for run in runs]])
    body = [
        html.Tr(
            [html.Td(row["key"]), *[html.Td(_show(value)) for value in row["values"]]],
            className="param-differs" if row["differs"] else "",
        )
        for row in rows
    ]
    return [
        html.Div(f"{differing} of {len(rows)} parameters differ (highlighted).", className="muted"),
        html.Table([html.Thead(head), html.Tbody(body)]),
    ]


def _span_chart(run: StoredRun) -> Any:
    import plotly.graph_objects as go
    from dash import dcc, html

    rows = data.span_rows(run)
    if not rows:
        return html.Div(f"{run.name}: no epochs or phases recorded.", className="muted")
    figure = go.Figure(
        go.Bar(
            x=[row["duration"] for row in rows],
            base=[row["start"] for row in rows],
            y=[f"{row['kind']}: {row['name']}" for row in rows],
            orientation="h",
            customdata=[row["steps"] for row in rows],
            hovertemplate="%{y}<br>start %{base:.3f}s, %{x:.3f}s<br>steps %{customdata}<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": f"{run.name} ({run.id[:8]})", "x": 0.01},
        height=min(120 + 18 * len(rows), 600),
        margin={"l": 140, "r": 10, "t": 40, "b": 40},
        xaxis={"title": {"text": "seconds since start"}},
        yaxis={"autorange": "reversed"},
        uirevision=run.id,
    )
    return dcc.Graph(figure=figure, config={"displaylogo": False})


def _artifacts_table(runs: Sequence[StoredRun]) -> Any:
    from dash import html

    body = [
        html.Tr(
            [
                html.Td(f"{run.name} ({run.id[:8]})"),
                html.Td(item["name"]),
                html.Td(f"v{item['version']}"),
                html.Td(html.Code(item["sha256"][:16], title=item["sha256"])),
                html.Td(f"{item['size']:,} B"),
                html.Td(item["created_at"]),
            ]
        )
        for run in runs
        for item in data.artifact_rows(run)
    ]
    if not body:
        return html.Div("No artifacts logged.", className="muted")
    head = html.Tr([html.Th(name) for name in ("run", "artifact", "version", "sha256", "size", "created")])
    return html.Table([html.Thead(head), html.Tbody(body)])


def _best_figure(metric: str, items: list[dict[str, Any]]) -> Figure:
    import plotly.graph_objects as go

    figure = go.Figure(
        go.Bar(
            x=[f"{item['run']} ({item['id'][:8]})" for item in items],
            y=[item["best"] for item in items],
            text=[f"{item['best']:.4g} @ {item['step']}" for item in items],
            textposition="auto",
        )
    )
    figure.update_layout(
        title={"text": f"best {metric}", "x": 0.01}, height=300, margin={"l": 50, "r": 10, "t": 40, "b": 60}
    )
    return figure


def _export_report(base: Path, reports: Path | None, run_ids: list[str], metrics: list[str] | None) -> str:
    """The HTML of ``ExperimentManager.export_comparison``, written outside the store."""
    from runtel.tracking.manager import ExperimentManager

    manager = ExperimentManager(base)
    if reports is not None:
        folder = reports / datetime.now().strftime("comparison-%Y%m%d-%H%M%S-%f")
        return manager.export_comparison(run_ids, folder, metrics).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="runtel-report-") as scratch:
        return manager.export_comparison(run_ids, scratch, metrics).read_text(encoding="utf-8")


def _ids_in(search: Any) -> list[str]:
    """Run ids asked for by ``?runs=id1,id2`` (validated later against the listing)."""
    from urllib.parse import parse_qs

    asked = parse_qs(search.lstrip("?")).get("runs", []) if isinstance(search, str) else []
    return [part for item in asked for part in item.split(",") if part]


def selected_strings(value: Any) -> list[str]:
    """A multi-select's value as a list of strings, whatever the browser sent."""
    if isinstance(value, str):
        return [value]
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _choices(values: Any) -> list[dict[str, str]]:
    return [{"label": value, "value": value} for value in sorted({str(v) for v in values if v})]


def _show(value: Any) -> str:
    return "—" if value is None else str(value)
