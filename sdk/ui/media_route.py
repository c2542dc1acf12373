"""The UI server's media route: ``/_runtel/media/<run id>/<path in the run>`` sends one file of a run.

Store files are untrusted and so is the URL: the run must be in the store's listing, the path must be
one a record of that run names (compared as text, never joined to anything before it matches), or an
image cell of the table named by ``?table=<path>`` (itself a table a record names), and the
file it resolves to must still lie inside the run folder (a link put there since is refused with 403).
Only image and audio types are sent as such; anything else goes out as a download, and every answer
forbids scripts, so a crafted SVG or HTML file opened directly cannot run in the UI's origin.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from runtel.errors import StoreCorruptError
from runtel.store.scan import scan
from runtel.ui.media_data import ROUTE, listed_file
from runtel.ui.media_tables import cell_file

_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
}
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
#: Content-addressed files never change under their name, so the browser may keep them.
_IMMUTABLE = "private, max-age=31536000, immutable"


def register(flask_app: Any, base: Path) -> None:
    """Add the route to the Dash app's Flask server."""
    from flask import abort, request, send_file

    def media(run_id: str, relative: str) -> Any:
        run = scan(base).find(run_id)
        if run is None:
            abort(404)
        try:
            table = request.args.get("table")
            path = listed_file(run, relative) if table is None else cell_file(run, table, relative)
        except StoreCorruptError:
            abort(403)
        except ImportError:  # a table's cells need pandas to be read
            abort(404)
        if path is None:
            abort(404)
        kind = _TYPES.get(path.suffix.lower())
        response = send_file(
            path,
            mimetype=kind or "application/octet-stream",
            as_attachment=kind is None,
            conditional=True,
        )
        response.headers["Content-Security-Policy"] = _POLICY
        if PurePosixPath(relative).parts[0] == "media":
            response.headers["Cache-Control"] = _IMMUTABLE
        return response

    flask_app.add_url_rule(f"{ROUTE}/<run_id>/<path:relative>", "runtel_media", media)
