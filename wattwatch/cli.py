"""The `wattwatch` command: one subcommand per service, --help everywhere.

Each service package adds its own subcommand through `register(commands)` in its `cli.py`
(listed in COMMAND_MODULES). Exit codes: 0 success, 1 the command could not do its job (one
line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from wattwatch import __version__
from wattwatch.errors import WattwatchError

COMMAND_MODULES = ["timescale.cli", "ingest.cli", "drift.cli", "detector.cli", "exporters.cli", "exporters.demo"]
# Subcommands that later releases fill; until then they say so and fail.
PLANNED = {
}


def _planned(name: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        raise WattwatchError(f"'wattwatch {name}' is not available in wattwatch {__version__} yet")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattwatch",
        description="Electricity readings into TimescaleDB, scored for anomalies and drift. "
        "Configuration comes from WATTWATCH_* environment variables or a .env file.",
    )
    parser.add_argument("--version", action="version", version=f"wattwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    for name, summary in PLANNED.items():
        planned = commands.add_parser(name, help=f"{summary} (not available yet)",
                                      description=f"{summary.capitalize()}. Not available in "
                                      f"wattwatch {__version__} yet: the command exits with status 1.")
        planned.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        planned.set_defaults(func=_planned(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except WattwatchError as exc:
        print(f"wattwatch {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wattwatch {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
