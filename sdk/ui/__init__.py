"""The experiment comparison web UI (Dash): :func:`create_app` builds it, :func:`serve` runs it.

Importing this package needs nothing beyond runtel; Dash and plotly (``pip install runtel[ui]``) are
imported when an app is created. :mod:`runtel.ui.data` (what the pages show) is also used by the CLI,
which is why the app and the server are imported on first use here: ``runtel ls`` needs no page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtel.ui.app import create_app
    from runtel.ui.server import BackgroundServer, serve

__all__ = ["BackgroundServer", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from runtel.ui.app import create_app

        return create_app
    if name in ("BackgroundServer", "serve"):
        from runtel.ui import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
