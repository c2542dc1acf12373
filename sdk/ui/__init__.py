"""The experiment comparison web UI (Dash): :func:`create_app` builds it, :func:`serve` runs it.

Importing this package needs nothing beyond runtel; Dash and plotly (``pip install runtel[ui]``) are
imported when an app is created. :mod:`runtel.ui.data` (what the pages show) is also used by the CLI.
"""

from __future__ import annotations

from runtel.ui.app import create_app
from runtel.ui.server import BackgroundServer, serve

__all__ = ["BackgroundServer", "create_app", "serve"]
