"""The UI's media section: images, audio, text and tables by step, logged figures, histograms over steps.

Each chosen key gets a panel with a step slider over every step any selected run logged it at; each run
shows the step nearest to the slider's (said so when it is not the same). Only the items of the step on
screen reach the page, images by URL from the media route (:mod:`runtel.ui.media_route`), so a run with
thousands of images costs one step's worth. Tables are paged and sorted on the server; histograms are
drawn as TensorBoard's distributions (bands between percentiles) or as a heatmap.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtel.records import HistogramLogged
from runtel.store.query import StoredRun
from runtel.store.scan import READ_ERRORS, reason, scan
from runtel.ui import media_data, media_route, media_tables
from runtel.ui.media_data import Item, RunMedia

if TYPE_CHECKING:
    from dash import Dash
    from plotly.graph_objects import Figure

#: Keys shown before the user picks (the first of each kind first).
DEFAULT_KEYS = 4
#: Labelled positions on a step slider.
_MARKS = 8
_BAND = "rgba(9, 105, 218, {alpha})"
CSS = """
.media-panel { border-top: 1px solid #eaeef2; padding: 8px 0; }
.media-panel h3 { font-size: 14px; margin: 4px 0; }
.media-runs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.media-run { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 8px; max-width: 100%; }
.media-run h4 { font-size: 13px; margin: 0 0 6px; font-weight: normal; }
.media-items { display: flex; flex-wrap: wrap; gap: 8px; } .media-items figure { margin: 0; }
.media-image { width: 256px; max-width: 100%; height: auto; image-rendering: pixelated; background: #f6f8fa; }
figcaption { font-size: 12px; color: #57606a; max-width: 256px; overflow-wrap: anywhere; }
.media-items td img { width: 48px; height: auto; image-rendering: pixelated; }
.media-label { margin-top: 14px; }
.media-text { white-space: pre-wrap; max-width: 520px; max-height: 320px; overflow: auto; font-size: 12px;
  background: #f6f8fa; padding: 6px; margin: 0; }
"""


def section() -> Any:
    from dash import dcc, html

    return html.Section(
        [
            html.H2("Media"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="media-keys",
                        multi=True,
                        placeholder="images, audio, text, tables, figures, histograms",
                        options=[],
                        style={"minWidth": "420px"},
                    ),
                    dcc.RadioItems(
                        id="media-histogram-mode",
                        options=[
                            {"label": " distribution ", "value": "distribution"},
                            {"label": " heatmap ", "value": "heatmap"},
                        ],
                        value="distribution",
                        inline=True,
                    ),
                ],
                className="controls",
            ),
            html.Div(id="media-notes"),
            html.Div(id="media-panels"),
        ],
        id="media",
    )


def register(app: Dash, base: Path) -> None:
    from dash import MATCH, Input, Output, State, ctx, dcc, html, no_update

    media_route.register(app.server, base)
    if importlib.util.find_spec("pandas") is not None:
        # Tables need pandas; imported now, before serving, because a first import in one request's
        # thread races plotly's own check for pandas in another (a half-initialised module there).
        importlib.import_module("pandas")

    def chosen_runs(selected: Any) -> list[tuple[StoredRun, RunMedia]]:
        return [(run, media_data.run_media(run)) for run in scan(base).resolve(selected)]

    @app.callback(
        Output("media-keys", "options"),
        Output("media-keys", "value"),
        Output("media-notes", "children"),
        Input("selected", "value"),
        Input("tick", "data"),
        State("media-keys", "value"),
    )
    def keys(selected: Any, _: Any, current: Any) -> tuple[Any, Any, Any]:
        runs = chosen_runs(selected)
        found = media_data.track_keys([run for run, _ in runs])
        known = [key for key, _, _ in found]
        keep = [key for key in current if key in known] if isinstance(current, list) else []
        if not keep:
            keep = _defaults(found)
        notes = [
            html.Div(f"{run.name} ({run.id[:8]}): {note}", className="note")
            for run, index in runs
            for note in index.notes
        ]
        options = [{"label": f"{name} · {kind}", "value": key} for key, kind, name in found]
        return options, (no_update if keep == current else keep), notes

    @app.callback(
        Output("media-panels", "children"), Input("media-keys", "value"), Input("selected", "value")
    )
    def panels(chosen: Any, selected: Any) -> list[Any]:
        runs = chosen_runs(selected)
        shown = []
        for key in chosen if isinstance(chosen, list) else []:
            parsed = media_data.split_key(key)
            if parsed is None:
                continue
            kind, name = parsed
            if kind == "histogram":
                shown.append(_histogram_panel(key, name))
            else:
                steps = media_data.union_steps((index for _, index in runs), key)
                shown.append(_step_panel(key, kind, name, steps))
        return shown or [html.Div("No media, figures or histograms in the selected runs.", className="muted")]

    @app.callback(
        Output({"type": "media-view", "index": MATCH}, "children"),
        Output({"type": "media-label", "index": MATCH}, "children"),
        Output({"type": "media-step", "index": MATCH}, "max"),
        Output({"type": "media-step", "index": MATCH}, "marks"),
        Output({"type": "media-step", "index": MATCH}, "value"),
        Output({"type": "media-steps", "index": MATCH}, "data"),
        Input({"type": "media-step", "index": MATCH}, "value"),
        Input("tick", "data"),
        State({"type": "media-steps", "index": MATCH}, "data"),
        State({"type": "media-step", "index": MATCH}, "id"),
        State("selected", "value"),
    )
    def step_view(position: Any, _: Any, before: Any, slot: Any, selected: Any) -> tuple[Any, ...]:
        key = slot.get("index") if isinstance(slot, dict) else None
        runs = chosen_runs(selected)
        steps = media_data.union_steps((index for _, index in runs), key) if isinstance(key, str) else []
        if not steps or not isinstance(key, str):
            return html.Div("Not logged by the selected runs.", className="muted"), "", 0, {}, 0, []
        wanted = _wanted_step(position, before, steps, follow_latest=ctx.triggered_id == "tick")
        at = steps.index(wanted)
        view = [_run_card(run, index, key, wanted) for run, index in runs]
        label = f"step {wanted} · {at + 1} of {len(steps)} logged steps"
        return (
            view,
            label,
            len(steps) - 1,
            _marks(steps),
            no_update if at == position else at,
            no_update if steps == before else steps,
        )

    @app.callback(
        Output({"type": "media-histogram", "index": MATCH}, "children"),
        Input({"type": "media-histogram-key", "index": MATCH}, "data"),
        Input("media-histogram-mode", "value"),
        Input("tick", "data"),
        State("selected", "value"),
    )
    def histograms(name: Any, mode: Any, _: Any, selected: Any) -> list[Any]:
        graphs = []
        for run, index in chosen_runs(selected):
            records = index.histograms.get(name) if isinstance(name, str) else None
            if not records:
                continue
            label = f"{name} · {run.name} ({run.id[:8]})"
            figure = (
                heatmap_figure(records, label) if mode == "heatmap" else distribution_figure(records, label)
            )
            graphs.append(
                dcc.Graph(
                    id={"type": "media-histogram-graph", "index": f"{run.id}:{name}"},
                    figure=figure,
                    config={"displaylogo": False},
                )
            )
        return graphs or [html.Div("No histogram with values in the selected runs.", className="muted")]

    @app.callback(
        Output({"type": "media-grid", "index": MATCH}, "data"),
        Output({"type": "media-grid", "index": MATCH}, "page_count"),
        Output({"type": "media-grid", "index": MATCH}, "page_current"),
        Input({"type": "media-grid", "index": MATCH}, "page_current"),
        Input({"type": "media-grid", "index": MATCH}, "sort_by"),
        State({"type": "media-grid", "index": MATCH}, "id"),
        State("selected", "value"),
        prevent_initial_call=True,
    )
    def grid_page(page: Any, sort_by: Any, slot: Any, selected: Any) -> tuple[Any, Any, Any]:
        """The page asked for; a new sort starts again from the first page."""
        found = _grid_item(slot, chosen_runs(selected))
        if found is None:
            return no_update, no_update, no_update
        run, item = found
        resorted = any(prop.endswith(".sort_by") for prop in ctx.triggered_prop_ids)
        try:
            rows, pages = media_tables.page(run, item, 0 if resorted else page, sort_by)
        except (*READ_ERRORS, ImportError):
            return no_update, no_update, no_update
        return rows, pages, 0 if resorted else no_update


def _defaults(found: Sequence[tuple[str, str, str]]) -> list[str]:
    """The first key of each kind, then the next ones, up to :data:`DEFAULT_KEYS`."""
    firsts: dict[str, str] = {}
    for key, kind, _ in found:
        firsts.setdefault(kind, key)
    rest = [key for key, _, _ in found if key not in firsts.values()]
    return [*firsts.values(), *rest][:DEFAULT_KEYS]


def _wanted_step(position: Any, before: Any, steps: list[int], *, follow_latest: bool) -> int:
    """The step to show: the one the slider stood at (in the steps it was drawn with), moved to the
    nearest step still there; the latest when the slider is new or, on a store change, was at the end."""
    previous = [step for step in before if isinstance(step, int)] if isinstance(before, list) else []
    valid = isinstance(position, int) and 0 <= position < len(previous)
    if not valid or (follow_latest and position == len(previous) - 1):
        return steps[-1]
    nearest = media_data.nearest_step(np.asarray(steps, dtype=np.int64), previous[position])
    return steps[-1] if nearest is None else nearest


def _marks(steps: list[int]) -> dict[int, str]:
    positions = sorted({round(i) for i in np.linspace(0, len(steps) - 1, min(len(steps), _MARKS))})
    return {position: str(steps[position]) for position in positions}


def _step_panel(key: str, kind: str, name: str, steps: list[int]) -> Any:
    from dash import dcc, html

    last = max(len(steps) - 1, 0)
    return html.Div(
        [
            html.H3([name, " ", html.Span(kind, className="muted")]),
            dcc.Slider(
                id={"type": "media-step", "index": key},
                min=0,
                max=last,
                step=1,
                value=last,
                marks=_marks(steps) if steps else {},
                included=False,
                allow_direct_input=False,  # its box would show the slider's position, not the step
            ),
            html.Div(id={"type": "media-label", "index": key}, className="muted media-label"),
            dcc.Store(id={"type": "media-steps", "index": key}, data=steps),
            html.Div(id={"type": "media-view", "index": key}, className="media-runs"),
        ],
        className="media-panel",
        **_data(key=key),
    )


def _histogram_panel(key: str, name: str) -> Any:
    from dash import dcc, html

    return html.Div(
        [
            html.H3([name, " ", html.Span("histogram", className="muted")]),
            dcc.Store(id={"type": "media-histogram-key", "index": key}, data=name),
            html.Div(id={"type": "media-histogram", "index": key}, className="charts"),
        ],
        className="media-panel",
        **_data(key=key),
    )


def _run_card(run: StoredRun, index: RunMedia, key: str, wanted: int) -> Any:
    from dash import html

    shown, items = media_data.items_at(index, key, wanted)
    title = f"{run.name} ({run.id[:8]})"
    if shown is None:
        body: list[Any] = [html.Div("not logged in this run", className="muted")]
        heading = title
    else:
        heading = f"{title} · step {shown}" + (f" (nearest to {wanted})" if shown != wanted else "")
        body = [_item(run, item) for item in items]
    return html.Div(
        [html.H4(heading), html.Div(body, className="media-items")],
        className="media-run",
        **_data(run=run.id, step="" if shown is None else str(shown)),
    )


def _data(**values: str) -> dict[str, Any]:
    """``data-*`` attributes of an element, for tests and scripts that find a run's card or a panel."""
    return {f"data-{name}": value for name, value in values.items()}


def _item(run: StoredRun, item: Item) -> Any:
    from dash import html

    try:
        found = media_data.listed_file(run, item.file)
    except READ_ERRORS as exc:
        found, problem = None, reason(exc, run.dir)
    else:
        problem = f"{item.file} is missing from the run folder"
    if found is None:  # said in words, not drawn as a broken image
        return html.Div(f"{item.name} at step {item.step}: {problem}", className="problem")
    url = media_data.media_url(run.id, item.file)
    detail = media_data.describe(item)
    caption = [part for part in (item.caption, detail) if part]
    legend = html.Figcaption(" · ".join(caption)) if caption else None
    if item.kind in ("image", "figure"):
        image = html.Img(src=url, alt=item.caption or item.name, className="media-image")
        return html.Figure([html.A(image, href=url, target="_blank", rel="noopener"), legend])
    if item.kind == "audio":
        return html.Figure([html.Audio(src=url, controls=True, preload="none"), legend])
    if item.kind == "text":
        try:
            text, cut = media_data.read_text(run, item)
        except READ_ERRORS as exc:
            return html.Div(f"{item.name}: {exc}", className="problem")
        more = html.Div(f"first {len(text):,} characters shown", className="muted") if cut else None
        return html.Figure([html.Pre(text, className="media-text"), more, legend])
    return _grid(run, item, legend)


def _grid(run: StoredRun, item: Item, legend: Any) -> Any:
    from dash import html
    from dash.dash_table.DataTable import DataTable

    try:
        rows, pages = media_tables.page(run, item, 0, [])
        columns: Any = media_tables.columns(run, item)
        cells: Any = rows  # the grid's own types for these are narrower than a page's
    except (*READ_ERRORS, ImportError) as exc:
        return html.Div(f"{item.name}: {exc}", className="problem")
    slot = json.dumps([run.id, media_data.key_of(item.kind, item.name), item.step, item.index])
    return html.Figure(
        [
            DataTable(
                id={"type": "media-grid", "index": slot},
                columns=columns,
                data=cells,
                page_action="custom",
                page_current=0,
                page_size=media_tables.PAGE_SIZE,
                markdown_options={"link_target": "_blank"},
                page_count=pages,
                sort_action="custom",
                sort_mode="single",
                sort_by=[],
                style_table={"overflowX": "auto", "maxWidth": "900px"},
                style_cell={"fontSize": "12px", "maxWidth": "320px", "whiteSpace": "normal"},
            ),
            legend,
        ]
    )


def _grid_item(slot: Any, runs: Sequence[tuple[StoredRun, RunMedia]]) -> tuple[StoredRun, Item] | None:
    """The table a grid's id names, once its run is selected and the table is in the run's index."""
    try:
        run_id, key, step, position = json.loads(slot["index"])
    except (TypeError, KeyError, ValueError):
        return None
    for run, index in runs:
        if run.id != run_id or not isinstance(step, int) or not isinstance(position, int):
            continue
        track = index.tracks.get(key) if isinstance(key, str) else None
        for item in track.items.get(step, []) if track is not None and track.kind == "table" else []:
            if item.index == position:
                return run, item
    return None


def distribution_figure(records: Sequence[HistogramLogged], title: str) -> Figure:
    """Bands between symmetric percentiles of each step (darker toward the median) and the median line."""
    import plotly.graph_objects as go

    steps, percentiles = media_data.distribution(records)
    mode = "lines" if steps.size > 1 else "lines+markers"
    figure = go.Figure()
    names = media_data.PERCENTILES
    last = len(names) - 1
    for band in range(last // 2):
        figure.add_scatter(
            x=steps, y=percentiles[:, band], mode=mode, line={"width": 0}, hoverinfo="skip", showlegend=False
        )
        figure.add_scatter(
            x=steps,
            y=percentiles[:, last - band],
            mode=mode,
            line={"width": 0},
            fill="tonexty",
            fillcolor=_BAND.format(alpha=0.15 + 0.15 * band),
            name=f"p{names[band]:g} to p{names[last - band]:g}",
        )
    figure.add_scatter(
        x=steps, y=percentiles[:, last // 2], mode=mode, line={"color": _BAND.format(alpha=1)}, name="median"
    )
    figure.update_layout(
        title={"text": title, "x": 0.01},
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        xaxis={"title": {"text": "step"}},
        legend={"orientation": "h", "y": -0.2},
        uirevision=title,  # a zoom survives the redraw of a live run
    )
    return figure


def heatmap_figure(records: Sequence[HistogramLogged], title: str) -> Figure:
    """The share of each step's values in each value bin, steps across, values up."""
    import plotly.graph_objects as go

    steps, centres, shares = media_data.heatmap(records)
    figure = go.Figure(
        go.Heatmap(x=steps, y=centres, z=shares, colorscale="Viridis", colorbar={"title": {"text": "share"}})
    )
    figure.update_layout(
        title={"text": title, "x": 0.01},
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": "value"}},
        uirevision=title,
    )
    return figure
