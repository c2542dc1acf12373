"""A comparison written to disk: one self-contained HTML page, plus the same numbers as CSV and JSON.

The HTML page needs nothing beside itself (plots are embedded as base64 PNG, styles inline), so it
can be mailed or attached to a ticket. CSV and JSON carry every float exactly (``repr``); JSON
writes a NaN as ``null``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel.records import flatten_params

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HTML_NAME = "comparison.html"
CSV_NAME = "comparison.csv"
JSON_NAME = "comparison.json"
#: Columns of ``comparison.csv`` and keys of each row of a comparison table.
TABLE_COLUMNS = (
    "experiment_id",
    "experiment_name",
    "metric",
    "best",
    "best_step",
    "last",
    "min",
    "max",
    "count",
)
_MISSING = "—"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0 2em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
tr.differs td { background: #fff3c4; }
td.best { font-weight: bold; color: #0a6b2d; }
figure { display: inline-block; margin: 0 1em 1em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def export_comparison(
    experiments: Sequence[Mapping[str, Any]],
    table: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Figure],
    output_dir: str | os.PathLike[str],
) -> Path:
    """Write ``comparison.html``, ``comparison.csv`` and ``comparison.json`` into ``output_dir``.

    ``experiments``: dicts with ``experiment_id``, ``experiment_name``, ``status``, ``created_at`` and
    ``params``; ``table``: rows with :data:`TABLE_COLUMNS`. Returns the HTML page's path.
    """
    target = Path(output_dir)
    target.mkdir(parents=True, exist_ok=True)
    _write_csv(target / CSV_NAME, table)
    document = {"experiments": [dict(e) for e in experiments], "metrics": [dict(row) for row in table]}
    (target / JSON_NAME).write_text(
        json.dumps(_nan_to_none(document), indent=2, allow_nan=False, default=str), encoding="utf-8"
    )
    page = target / HTML_NAME
    page.write_text(_html(experiments, table, figures), encoding="utf-8")
    return page


def _write_csv(path: Path, table: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, Mapping):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(item) for item in value]
    return value


def _html(
    experiments: Sequence[Mapping[str, Any]],
    table: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Figure],
) -> str:
    labels = [f"{e['experiment_name']} ({str(e['experiment_id'])[:8]})" for e in experiments]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Experiment comparison</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Experiment comparison</h1>",
        f"<p>Generated {_text(created)} by runtel.</p>",
        "<h2>Experiments</h2>",
        _experiments_table(experiments),
        "<h2>Hyperparameters</h2>",
        "<p>Rows where the experiments differ are highlighted.</p>",
        _params_table(experiments, labels),
        "<h2>Best values</h2>",
        _best_table(experiments, labels, table),
        "<h2>Metrics</h2>",
        *(_figure(name, figure) for name, figure in figures.items()),
        "</body></html>",
    ]
    return "\n".join(parts)


def _experiments_table(experiments: Sequence[Mapping[str, Any]]) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("Name", "Id", "Status", "Created"))
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{_text(e.get(key))}</td>"
            for key in ("experiment_name", "experiment_id", "status", "created_at")
        )
        + "</tr>"
        for e in experiments
    )
    return f'<table id="experiments"><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>'


def _params_table(experiments: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> str:
    flat = [flatten_params(dict(e.get("params") or {})) for e in experiments]
    keys = sorted({key for params in flat for key in params})
    rows = []
    for key in keys:
        shown = [_param(params[key]) if key in params else _MISSING for params in flat]
        differs = ' class="differs"' if len(set(shown)) > 1 else ""
        cells = "".join(f"<td>{_text(value)}</td>" for value in shown)
        rows.append(f"<tr{differs}><th>{_text(key)}</th>{cells}</tr>")
    header = "<th>Parameter</th>" + "".join(f"<th>{_text(label)}</th>" for label in labels)
    return (
        f'<table id="hyperparameters"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _best_table(
    experiments: Sequence[Mapping[str, Any]], labels: Sequence[str], table: Sequence[Mapping[str, Any]]
) -> str:
    """Best value (and its step) per metric and experiment; the winners of each row in bold green."""
    cells: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in table:
        cells.setdefault(row["metric"], {})[row["experiment_id"]] = row
    ids = [e["experiment_id"] for e in experiments]
    rows = []
    for metric, by_id in cells.items():
        winners = _winners(by_id)
        tds = []
        for experiment_id in ids:
            found = by_id.get(experiment_id)
            if found is None:
                tds.append(f"<td>{_MISSING}</td>")
                continue
            mark = ' class="best"' if experiment_id in winners else ""
            tds.append(f"<td{mark}>{_text(_number(found['best']))} (step {_text(found['best_step'])})</td>")
        rows.append(f"<tr><th>{_text(metric)}</th>{''.join(tds)}</tr>")
    header = "<th>Metric</th>" + "".join(f"<th>{_text(label)}</th>" for label in labels)
    return f'<table id="best-values"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _winners(by_id: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The experiments whose best is best overall (ties share it). Each row's ``best`` equals its
    ``min`` for a lower-is-better metric, so the direction is read off the rows themselves."""
    finite = {key: row["best"] for key, row in by_id.items() if math.isfinite(row["best"])}
    if len(finite) < 2:
        return set()
    lower = all(by_id[key]["best"] == by_id[key]["min"] for key in finite)
    top = min(finite.values()) if lower else max(finite.values())
    return {key for key, value in finite.items() if value == top}


def _figure(name: str, figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{_text(name)}">'
        f"<figcaption>{_text(name)}</figcaption></figure>"
    )


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value))
