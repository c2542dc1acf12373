"""The UI's edit panel, only when started with ``allow_edits``: tags, note and name of one run, nothing else.

The UI has no login, so an edit must come from this page in a browser on this machine:

- the server binds loopback addresses only (:func:`runtel.ui.server.make_server` refuses others);
- every request must name a loopback ``Host`` (a page of another site that a DNS rebinding points at
  127.0.0.1 names its own host), so no other site can load the page and read the token;
- edits are ``POST /_runtel/edit`` with the per-launch token (in this page's ``<meta>``, nowhere else) in
  the ``X-Runtel-Token`` header, a JSON body, and an ``Origin`` (when the browser sends one) that is the
  page's own: a cross-site form can set neither the header nor the content type.

Edits go through :meth:`runtel.StoredRun.edit` (``edits.jsonl``), safe while the run is being written.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtel._net import is_loopback
from runtel.errors import RuntelError
from runtel.store.scan import scan

if TYPE_CHECKING:
    from dash import Dash

EDIT_ROUTE = "/_runtel/edit"
TOKEN_HEADER = "X-Runtel-Token"
ALLOW_EDITS = "RUNTEL_ALLOW_EDITS"

_SCRIPT = """<script>
document.addEventListener("click", async (event) => {
  if (!event.target || event.target.id !== "edit-apply") return;
  const $ = (id) => document.getElementById(id);
  const status = $("edit-status");
  const current = JSON.parse($("edit-current").textContent || "{}");
  const words = $("edit-tags").value.split(/\\s+/).filter(Boolean);
  const body = {
    run: current.id,
    add: words.filter((w) => !w.startsWith("-")).map((w) => w.replace(/^\\+/, "")),
    remove: words.filter((w) => w.startsWith("-")).map((w) => w.slice(1)),
  };
  if ($("edit-note").value !== (current.note || "")) body.note = $("edit-note").value;
  if ($("edit-name").value !== current.name) body.name = $("edit-name").value;
  const token = document.querySelector('meta[name="runtel-edit-token"]').content;
  const response = await fetch("EDIT_ROUTE", {
    method: "POST",
    headers: {"Content-Type": "application/json", "TOKEN_HEADER": token},
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  status.textContent = response.ok ? "saved: tags " + (answer.tags.join(", ") || "(none)") : answer.error;
  if (response.ok) $("edit-tags").value = "";
});
</script>""".replace("EDIT_ROUTE", EDIT_ROUTE).replace("TOKEN_HEADER", TOKEN_HEADER)


def install(app: Dash, base: Path) -> str:
    """Add the panel, the edit route and the checks to ``app`` (a Dash app); the launch's token."""
    from flask import jsonify, request

    token = secrets.token_urlsafe(32)
    server = app.server
    server.config[ALLOW_EDITS] = True
    meta = f'<meta name="runtel-edit-token" content="{token}">'
    app.index_string = app.index_string.replace("{%metas%}", "{%metas%}" + meta).replace(
        "</body>", _SCRIPT + "</body>"
    )
    app.layout.children.append(_panel())

    def refuse(status: int, message: str) -> Any:
        response = jsonify(error=message)
        response.status_code = status
        return response

    def loopback_host_only() -> Any:
        if not is_loopback(_host_name(request.host)):
            return refuse(403, f"host {request.host!r} is not a loopback name; open the UI on 127.0.0.1")
        return None

    server.before_request(loopback_host_only)

    def edit() -> Any:
        if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
            return refuse(403, f"missing or wrong {TOKEN_HEADER}: edits come from the UI's own page only")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return refuse(403, f"cross-origin edit from {origin!r} refused")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return refuse(400, "the body must be a JSON object")
        run = scan(base).find(body.get("run"))
        if run is None:
            return refuse(404, f"no run {body.get('run')!r} in the store")
        changes: dict[str, Any] = {}
        for key in ("add", "remove"):
            value = body.get(key, [])
            if not isinstance(value, list):
                return refuse(400, f"{key} must be a list of tags")
            changes[key] = value
        for key in ("note", "name"):
            if body.get(key) is not None:
                changes[key] = body[key]
        try:
            run.edit(**changes)
        except RuntelError as exc:
            return refuse(400, str(exc))
        return jsonify(tags=list(run.tags), note=run.note, name=run.name)

    server.add_url_rule(EDIT_ROUTE, "runtel_edit", edit, methods=["POST"])
    _register(app, base)
    return token


def _host_name(host: str) -> str:
    """``127.0.0.1`` of ``127.0.0.1:8052``, ``::1`` of ``[::1]:8052``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _panel() -> Any:
    from dash import dcc, html

    return html.Section(
        [
            html.H2("Edit a run"),
            html.Div(
                [
                    dcc.Dropdown(id="edit-run", placeholder="run to edit", options=[]),
                    dcc.Input(id="edit-tags", placeholder="+add -remove", type="text"),
                    dcc.Input(id="edit-name", placeholder="display name", type="text"),
                    dcc.Textarea(id="edit-note", placeholder="note"),
                    html.Button("Apply", id="edit-apply"),
                    html.Span(id="edit-status", className="muted"),
                    html.Pre(id="edit-current", hidden=True),
                ],
                className="edit-panel",
            ),
        ]
    )


def _register(app: Dash, base: Path) -> None:
    from dash import Input, Output, no_update

    @app.callback(Output("edit-run", "options"), Input("url", "search"), Input("stamp", "data"))
    def choices(*_: Any) -> list[dict[str, str]]:
        return [{"label": f"{run.name} ({run.id[:8]})", "value": run.id} for run in scan(base).runs]

    @app.callback(
        Output("edit-current", "children"),
        Output("edit-name", "value"),
        Output("edit-note", "value"),
        Input("edit-run", "value"),
    )
    def chosen(run_id: Any) -> tuple[Any, Any, Any]:
        run = scan(base).find(run_id)
        if run is None:
            return no_update, no_update, no_update
        note = run.metadata.get("note") or ""
        current = {"id": run.id, "name": run.name, "note": note}
        return json.dumps(current), run.name, note
