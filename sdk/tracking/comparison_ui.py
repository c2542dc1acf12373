"""The seed's ``ExperimentComparisonUI`` and ``launch_comparison_ui`` over :mod:`runtel.ui`.

``python -m runtel.tracking.comparison_ui --port 8052 --base-dir runtel_runs`` starts the same page.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from runtel.tracking.manager import ExperimentManager
from runtel.ui.server import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["ExperimentComparisonUI", "launch_comparison_ui"]


class ExperimentComparisonUI:
    """A web page comparing the manager's experiments; it only reads the store, so it may run beside training.

    ``app`` is the Dash app (built at once, so a missing ``runtel[ui]`` extra fails here, not in ``run``).
    """

    def __init__(
        self,
        manager: ExperimentManager | None = None,
        port: int = DEFAULT_PORT,
        *,
        report_dir: str | os.PathLike[str] | None = None,
        allow_edits: bool = False,
    ) -> None:
        from runtel.ui.app import create_app

        self.manager = manager if manager is not None else ExperimentManager()
        self.port = port
        self.app = create_app(self.manager.base_dir, report_dir=report_dir, allow_edits=allow_edits)

    def run(self, debug: bool = False, host: str = DEFAULT_HOST) -> None:
        """Serve until Ctrl-C on ``host`` (loopback by default; another address is logged as a warning)."""
        from runtel.ui.server import serve

        serve(self.app, host, self.port, debug=debug)


def launch_comparison_ui(
    port: int = DEFAULT_PORT,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    host: str = DEFAULT_HOST,
    debug: bool = False,
    report_dir: str | os.PathLike[str] | None = None,
    allow_edits: bool = False,
) -> None:
    """Serve the comparison UI over ``base_dir`` (default ``RUNTEL_BASE_DIR`` or ``runtel_runs``).

    ``allow_edits`` adds the tag/note/rename panel (loopback hosts only; see :mod:`runtel.ui.edits_view`)."""
    _show_warnings()
    manager = ExperimentManager(base_dir)
    ui = ExperimentComparisonUI(manager, port, report_dir=report_dir, allow_edits=allow_edits)
    ui.run(debug=debug, host=host)


def _show_warnings() -> None:
    """The URL and the non-loopback warning reach the terminal even when logging is not configured."""
    logger = logging.getLogger("runtel.ui")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtel.tracking.comparison_ui")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--base-dir", default=None)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    launch_comparison_ui(args.port, args.base_dir, host=args.host, debug=args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
