"""The UI's group view: runs grouped by chosen fields, one line per group (the mean) with a mean ± std or a
min-max band, and a parallel-coordinates plot of every run's params against its best value of the metric.

Its own section (:func:`section`) and callbacks (:func:`register`), reading only, through
:func:`runtel.store.aggregate.aggregate`. It works on the runs selected in the Compare box, or, with none
selected, on every run the runs table's filters let through. Charts are built only once a metric is chosen.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from runtel.errors import ConfigError
from runtel.records import flatten_params
from runtel.store.aggregate import RUN_FIELDS, Aggregate, aggregate
from runtel.store.query import StoredRun
from runtel.store.scan import READ_ERRORS, scan
from runtel.ui import data
from runtel.ui.sweep_view import parallel_dimension

if TYPE_CHECKING:
    from dash import Dash
    from plotly.graph_objects import Figure

#: Grid steps per group sent to the browser: a longer union of steps is resampled to this many.
MAX_GRID_STEPS = 2000
Band = Literal["std", "minmax"]
_BANDS = {"std": "mean ± std", "minmax": "min-max"}
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def section() -> Any:
    from dash import dcc, html

    return html.Section(
        [
            html.H2("Groups"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="group-by", multi=True, placeholder="group by (params, tags...)", options=[]
                    ),
                    dcc.Dropdown(id="group-metric", placeholder="metric", options=[]),
                    dcc.RadioItems(
                        id="group-band",
                        options=[{"label": f" {label} ", "value": key} for key, label in _BANDS.items()],
                        value="std",
                        inline=True,
                    ),
                ],
                className="controls",
            ),
            html.Div(id="group-note", className="muted"),
            html.Div(id="group-charts", className="charts"),
        ]
    )


def register(app: Dash, base: Path) -> None:
    from dash import Input, Output

    from runtel.ui.app import selected_strings

    scope = [
        Input("selected", "value"),
        Input("f-project", "value"),
        Input("f-status", "value"),
        Input("f-tag", "value"),
        Input("f-name", "value"),
        Input("tick", "data"),
    ]

    def runs_in_scope(selected: Any, projects: Any, statuses: Any, tags: Any, name: Any) -> list[StoredRun]:
        found = scan(base)
        chosen = found.resolve(selected)
        if chosen:
            return chosen
        box = data.filter_box(found.runs, name if isinstance(name, str) else "")
        rows = data.filter_rows(
            (data.run_row(run) for run in box.runs),
            projects=selected_strings(projects),
            statuses=selected_strings(statuses),
            tags=selected_strings(tags),
            name=box.name,
        )
        kept = {row["id"] for row in rows}
        return [run for run in found.runs if run.id in kept]

    @app.callback(
        Output("group-by", "options"),
        Output("group-metric", "options"),
        *scope,
    )
    def choices(*filters: Any) -> tuple[Any, Any]:
        """The fields and metrics of the runs in scope; no metric is chosen for the user, so a large
        store reads no series until one is asked for."""
        runs = runs_in_scope(*filters[:5])
        fields = [*RUN_FIELDS, *(param_field(key) for key in param_keys(runs))]
        metrics = [name for name in data.metric_names(runs) if not name.startswith("system/")]
        return (
            [{"label": field, "value": field} for field in fields],
            [{"label": name, "value": name} for name in metrics],
        )

    @app.callback(
        Output("group-charts", "children"),
        Output("group-note", "children"),
        Input("group-by", "value"),
        Input("group-metric", "value"),
        Input("group-band", "value"),
        *scope,
    )
    def charts(by: Any, metric: Any, band: Any, *filters: Any) -> tuple[Any, str]:
        if not isinstance(metric, str):
            return [], "Choose a metric to group."
        runs = runs_in_scope(*filters[:5])
        try:
            result = grouped(runs, metric, selected_strings(by))
        except READ_ERRORS as exc:  # a field the grammar refuses, sent by hand, is a FilterSyntaxError
            return [], f"Not grouped: {exc}"
        shown: Band = "minmax" if band == "minmax" else "std"
        skipped = "; ".join(f"{item.name}: {item.reason}" for item in result.skipped)
        note = f"{_count(len(result.groups), 'group')} of {_count(len(runs), 'run')}" + (
            f" (skipped {skipped})" if skipped else ""
        )
        return [
            _graph("group-chart", band_figure(result, shown)),
            _graph("group-parcoords", parcoords_figure(runs, result)),
        ], note


def grouped(runs: Sequence[StoredRun], metric: str, fields: Sequence[str]) -> Aggregate:
    """The aggregate on the union of steps, resampled to ``MAX_GRID_STEPS`` when that union is longer
    (or too large to hold: :data:`runtel.store.aggregate.MAX_CELLS`)."""
    try:
        result = aggregate(runs, metric, fields)
    except ConfigError:
        return aggregate(runs, metric, fields, grid=MAX_GRID_STEPS)
    if any(group.step.size > MAX_GRID_STEPS for group in result.groups):
        result = aggregate(runs, metric, fields, grid=MAX_GRID_STEPS)
    return result


def band_figure(result: Aggregate, band: Band) -> Figure:
    """Per group a filled band (``<label> band``: mean ± std or min-max) under its mean line (``<label>``);
    the band covers the grid steps where both of its edges are finite."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for index, group in enumerate(result.groups):
        colour = _COLOURS[index % len(_COLOURS)]
        if band == "std":
            lower, upper = group.mean - group.std, group.mean + group.std
        else:
            lower, upper = group.min, group.max
        edges = np.isfinite(lower) & np.isfinite(upper)
        x = group.step[edges]
        figure.add_scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([upper[edges], lower[edges][::-1]]),
            fill="toself",
            fillcolor=_translucent(colour),
            line={"width": 0},
            hoverinfo="skip",
            name=f"{group.label} band",
            legendgroup=group.label,
            showlegend=False,
        )
        figure.add_scatter(
            x=group.step,
            y=group.mean,
            mode="lines" if group.step.size > 1 else "markers",
            line={"color": colour},
            name=f"{group.label} ({_count(len(group.run_ids), 'run')})",
            legendgroup=group.label,
            customdata=np.stack([group.n, group.std], axis=-1),
            hovertemplate="step %{x}<br>mean %{y:.6g}<br>std %{customdata[1]:.4g}<br>n %{customdata[0]}",
        )
    figure.update_layout(
        title={"text": f"{result.metric} per group: mean, band {_BANDS[band]}", "x": 0.01},
        height=420,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.18},
        xaxis={"title": {"text": "step"}},
        uirevision=result.metric,
    )
    return figure


def parcoords_figure(runs: Sequence[StoredRun], result: Aggregate) -> Figure:
    """One line per run that has the metric: its params that differ between runs (all of them when none
    differ) and, last, its best value of the metric, coloured by that value (all-NaN runs left out)."""
    import plotly.graph_objects as go

    best = {
        run_id: value
        for group in result.groups
        for run_id, value in zip(group.run_ids, group.best.values.tolist(), strict=True)
        if not math.isnan(value)
    }
    shown = [run for run in runs if run.id in best]
    params = [flatten_params(data.params_of(run)) for run in shown]
    keys = param_keys(shown)
    varying = [key for key in keys if len({repr(p.get(key)) for p in params}) > 1] or keys
    dimensions = [parallel_dimension(key, [p.get(key) for p in params]) for key in varying]
    values = [best[run.id] for run in shown]
    dimensions.append({"label": f"best {result.metric}", "values": values})
    figure = go.Figure(
        go.Parcoords(
            dimensions=dimensions,
            line={"color": values, "colorscale": "Viridis", "showscale": True},
        )
    )
    figure.update_layout(title={"text": f"{len(shown)} runs: params and best {result.metric}", "x": 0.01})
    return figure


def param_keys(runs: Sequence[StoredRun]) -> list[str]:
    """Every flattened parameter any of the runs has, in first-seen order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(flatten_params(data.params_of(run))))
    return list(keys)


def param_field(key: str) -> str:
    """The filter grammar's name of a flattened param (``optimizer/name``, as :func:`flatten_params` joins
    keys): ``params.optimizer.name``, a part that is not an identifier (or is a keyword) as a subscript:
    ``params.data['batch-size']``."""
    parts = key.split("/")
    return "params" + "".join(
        f".{part}" if part.isidentifier() and not keyword.iskeyword(part) else f"[{part!r}]" for part in parts
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _translucent(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.2)"


def _graph(id_: str, figure: Figure) -> Any:
    from dash import dcc

    return dcc.Graph(id=id_, figure=figure, config={"displaylogo": False})
