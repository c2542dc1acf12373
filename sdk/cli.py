"""The ``runtel`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runtel import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtel", description="OpenTelemetry-native experiment tracking.")
    parser.add_argument("--version", action="version", version=f"runtel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a small real training loop logged to the local store")
    demo.add_argument(
        "--base-dir", default=None, help="store folder (default: runtel_runs or RUNTEL_BASE_DIR)"
    )
    demo.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from runtel.demo import main as run_demo

        run_demo(base_dir=args.base_dir, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
