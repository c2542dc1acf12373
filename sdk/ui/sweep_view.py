"""The UI's sweep view: one sweep's trials table (sortable by objective), a parallel-coordinates plot of
params against the objective, the objective over trials with the running best, and chosen trials' curves.

Its own section of the page (:func:`section`) with its own callbacks (:func:`register`), reading only,
through :mod:`runtel.ui.sweep_data`. Charts are created only once a sweep is shown, so a store without
sweeps pays nothing for them in the browser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel.store.query import Store
from runtel.store.scan import READ_ERRORS, scan
from runtel.ui import data
from runtel.ui.sweep_data import SweepTable, param_names, sweep_table

if TYPE_CHECKING:
    from dash import Dash
    from plotly.graph_objects import Figure

_ORDERS = {"best": "best first", "worst": "worst first", "trial": "by trial number"}
_STATE_CODES = {"completed": 0, "pruned": 1, "failed": 2}


def section() -> Any:
    from dash import dcc, html

    return html.Section(
        [
            html.H2("Sweeps"),
            html.Div(
                [
                    dcc.Dropdown(id="sweep-choice", placeholder="choose a sweep", options=[]),
                    dcc.RadioItems(
                        id="sweep-order",
                        options=[{"label": f" {label} ", "value": key} for key, label in _ORDERS.items()],
                        value="best",
                        inline=True,
                    ),
                ],
                className="controls",
            ),
            html.Div(id="sweep-summary", className="muted"),
            html.Div(id="sweep-table"),
            html.Div(id="sweep-charts", className="charts"),
            html.Div(
                [
                    dcc.Dropdown(id="sweep-trials", multi=True, placeholder="trials to overlay", options=[]),
                    dcc.Dropdown(id="sweep-metric", placeholder="metric", options=[]),
                ],
                className="controls",
            ),
            html.Div(id="sweep-curves-slot"),
        ]
    )


def register(app: Dash, base: Path) -> None:
    from dash import Input, Output, State, html, no_update

    def sweeps() -> list[dict[str, str]]:
        found = scan(base).runs
        return [
            {"label": f"{run.name} ({run.id[:8]})", "value": run.id}
            for run in found
            if run.sweep is not None and run.sweep.role == "sweep"
        ]

    @app.callback(
        Output("sweep-choice", "options"),
        Output("sweep-choice", "value"),
        Input("url", "search"),
        Input("tick", "data"),
        State("sweep-choice", "value"),
    )
    def choices(_: Any, __: Any, current: Any) -> tuple[Any, Any]:
        """The store's sweeps; the latest is shown until one is chosen."""
        options = sweeps()
        ids = [option["value"] for option in options]
        return options, (no_update if current in ids else (ids[-1] if ids else None))

    @app.callback(
        Output("sweep-summary", "children"),
        Output("sweep-table", "children"),
        Output("sweep-charts", "children"),
        Output("sweep-trials", "options"),
        Output("sweep-trials", "value"),
        Output("sweep-metric", "options"),
        Output("sweep-metric", "value"),
        Input("sweep-choice", "value"),
        Input("sweep-order", "value"),
        Input("tick", "data"),
        State("sweep-trials", "value"),
        State("sweep-metric", "value"),
    )
    def view(chosen: Any, order: Any, _: Any, trials: Any, metric: Any) -> tuple[Any, ...]:
        if not isinstance(chosen, str) or chosen not in {o["value"] for o in sweeps()}:
            return "", html.Div("No sweep in this store.", className="muted"), [], [], [], [], None
        try:
            table = sweep_table(Store(base), chosen)
        except READ_ERRORS as exc:
            return str(exc), "", [], [], [], [], None
        options = [
            {"label": f"trial {row['trial']} · {row['state']}", "value": row["id"]} for row in table.rows
        ]
        known = {row["id"] for row in table.rows}
        keep = [item for item in trials if item in known] if isinstance(trials, list) else []
        picked = keep or [row["id"] for row in table.rows[:3]]
        metrics = data.metric_names([run for run in table.trials if run.id in picked])
        metric_options = [
            {"label": name, "value": name} for name in metrics if not name.startswith("system/")
        ]
        names = [option["value"] for option in metric_options]
        wanted = f"intermediate/{table.objective.partition('/')[2]}" if table.objective else None
        chosen_metric = (
            metric if metric in names else (wanted if wanted in names else next(iter(names), None))
        )
        return (
            _summary_line(table),
            _table(_ordered(table, order if order in _ORDERS else "best")),
            [
                _graph("sweep-parcoords", parcoords_figure(table)),
                _graph("sweep-objective", objective_figure(table)),
            ],
            options,
            picked if picked != trials else no_update,
            metric_options,
            chosen_metric if chosen_metric != metric else no_update,
        )

    @app.callback(
        Output("sweep-curves-slot", "children"),
        Input("sweep-trials", "value"),
        Input("sweep-metric", "value"),
        Input("tick", "data"),
        State("sweep-choice", "value"),
    )
    def curves(trials: Any, metric: Any, _: Any, chosen: Any) -> Any:
        from runtel.ui.app import metric_figure

        if not isinstance(metric, str) or not isinstance(trials, list) or not trials:
            return []
        runs = scan(base).resolve([item for item in trials if isinstance(item, str)])
        return _graph("sweep-curves", metric_figure(runs, metric, "step", None, False, 0.0))


def parcoords_figure(table: SweepTable) -> Figure:
    """Every trial a line across its params, its state and its objective (a missing objective is drawn at
    the axis' low end, so failed trials stay visible), coloured by objective."""
    import plotly.graph_objects as go

    rows = sorted(table.rows, key=lambda row: row["trial"] if isinstance(row["trial"], int) else -1)
    dimensions = [
        parallel_dimension(name, [row["params"].get(name) for row in rows]) for name in param_names(rows)
    ]
    dimensions.append(
        {
            "label": "state",
            "values": [_STATE_CODES.get(row["state"], 2) for row in rows],
            "tickvals": list(_STATE_CODES.values()),
            "ticktext": list(_STATE_CODES),
        }
    )
    objective = [row["objective"] for row in rows]
    finite = [value for value in objective if value is not None and math.isfinite(value)]
    floor = min(finite) if finite else 0.0
    shown = [value if value is not None and math.isfinite(value) else floor for value in objective]
    dimensions.append({"label": table.objective or "objective", "values": shown})
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={"color": shown, "colorscale": "Viridis", "showscale": True},
            customdata=[row["trial"] for row in rows],
        )
    )
    figure.update_layout(title={"text": f"{len(rows)} trials: params and objective", "x": 0.01})
    return figure


def objective_figure(table: SweepTable) -> Figure:
    """The objective of each trial by trial number, with the running best as a step line."""
    import plotly.graph_objects as go

    rows = sorted(
        (row for row in table.rows if row["objective"] is not None and isinstance(row["trial"], int)),
        key=lambda row: row["trial"],
    )
    figure = go.Figure()
    figure.add_scatter(
        x=[row["trial"] for row in rows],
        y=[row["objective"] for row in rows],
        mode="markers",
        name="objective",
        text=[row["state"] for row in rows],
    )
    best: list[float] = []
    x: list[int] = []
    for row in rows:
        if row["state"] != "completed" or table.direction is None or math.isnan(row["objective"]):
            continue
        value = row["objective"]
        if best:
            value = max(value, best[-1]) if table.direction == "maximize" else min(value, best[-1])
        best.append(value)
        x.append(row["trial"])
    figure.add_scatter(x=x, y=best, mode="lines", line={"shape": "hv"}, name="running best")
    figure.update_layout(
        title={"text": f"{table.objective or 'objective'} over trials", "x": 0.01},
        xaxis_title="trial",
    )
    return figure


def parallel_dimension(name: str, values: Sequence[Any]) -> dict[str, Any]:
    """A numeric axis, or a categorical one (values as ticks) for strings and mixed values."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return {"label": name, "values": list(values)}
    labels = sorted({str(v) for v in values})
    codes = {label: i for i, label in enumerate(labels)}
    return {
        "label": name,
        "values": [codes[str(v)] for v in values],
        "tickvals": list(range(len(labels))),
        "ticktext": labels,
    }


def _ordered(table: SweepTable, order: str) -> list[dict[str, Any]]:
    if order == "trial":
        return sorted(table.rows, key=lambda row: row["trial"] if isinstance(row["trial"], int) else -1)
    if order == "worst":
        ranked = [row for row in table.rows if row["objective"] is not None]
        return [*reversed(ranked), *(row for row in table.rows if row["objective"] is None)]
    return list(table.rows)


def _table(rows: list[dict[str, Any]]) -> Any:
    from dash import html

    params = param_names(rows)
    header = ["trial", "name", "status", "state", "objective", *params]
    body = [
        html.Tr(
            [
                html.Td(str(row["trial"])),
                html.Td(f"{row['name']} ({row['id8']})"),
                html.Td(html.Span(row["status"], className=f"status status-{row['status']}")),
                html.Td(row["state"]),
                html.Td(_number(row["objective"])),
                *(html.Td(_number(row["params"].get(name))) for name in params),
            ],
            className="sweep-trial",
        )
        for row in rows
    ]
    return html.Table([html.Thead(html.Tr([html.Th(h) for h in header])), html.Tbody(body)], id="sweep-rows")


def _summary_line(table: SweepTable) -> str:
    summary = table.summary()
    states = ", ".join(f"{count} {state}" for state, count in summary["states"].items())
    best = (
        f"best trial {summary['best_trial']}: {_number(summary['best'])}"
        if summary["best_trial"] is not None
        else "no completed trial"
    )
    return f"{summary['trials']} trials ({states}); {best} ({summary['direction'] or 'direction unknown'})"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


def _graph(id_: str, figure: Figure) -> Any:
    from dash import dcc

    return dcc.Graph(id=id_, figure=figure, config={"displaylogo": False})
