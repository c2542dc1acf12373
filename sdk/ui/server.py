"""Serving the comparison UI: loopback by default, a warning before anything else, no caching of pages.

The UI has no authentication, so binding to an address other than loopback is allowed only when asked
for, and logged as a warning naming the address.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from runtel._net import is_loopback as is_loopback  # re-exported: the UI's own check
from runtel.errors import ConfigError

if TYPE_CHECKING:
    from dash import Dash
    from werkzeug.serving import BaseWSGIServer

logger = logging.getLogger("runtel.ui")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8052
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def harden(flask_app: Any) -> None:
    """Headers that keep other sites from framing the UI or sniffing its responses into scripts."""

    def add_headers(response: Any) -> Any:
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    flask_app.after_request(add_headers)


def make_server(app: Dash, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> BaseWSGIServer:
    """A threaded WSGI server bound to ``host:port`` (port 0 picks a free one), not yet serving."""
    from werkzeug.serving import make_server as werkzeug_server

    if app.server.config.get("RUNTEL_ALLOW_EDITS") and not is_loopback(host):
        raise ConfigError(
            f"the UI was started with allow_edits, which serves loopback addresses only; {host!r} is not one "
            "(use 127.0.0.1, or drop allow_edits to share a read-only UI)"
        )
    if not is_loopback(host):
        logger.warning(
            "runtel UI listening on %s: anyone who can reach this address can read every run in the store "
            "(there is no authentication)",
            host,
        )
    return werkzeug_server(host, port, app.server, threaded=True)


def url_of(server: BaseWSGIServer) -> str:
    host = server.host if ":" not in server.host else f"[{server.host}]"
    return f"http://{host}:{server.port}/"


def serve(app: Dash, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, debug: bool = False) -> None:
    """Serve until Ctrl-C. ``debug`` turns on Dash's in-page error reports and callback graph."""
    if debug:
        app.enable_dev_tools(debug=True, dev_tools_hot_reload=False)
    server = make_server(app, host, port)
    logger.warning("runtel UI at %s (Ctrl-C to stop)", url_of(server))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class BackgroundServer:
    """The UI served from a daemon thread (tests, notebooks, benchmarks); ``close()`` stops it."""

    def __init__(self, app: Dash, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.server = make_server(app, host, port)
        self.url = url_of(self.server)
        self._thread = threading.Thread(target=self.server.serve_forever, name="runtel-ui", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
