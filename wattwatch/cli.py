"""The `wattwatch` command: one subcommand per service, --help everywhere.

Each service package adds its own subcommand through `register(commands)` in its `cli.py`
(listed in COMMAND_MODULES). Exit codes: 0 success, 1 the command could not do its job (one
line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from wattwatch import __version__, logs
from wattwatch.errors import WattwatchError

COMMAND_MODULES = ["timescale.cli", "ingest.cli", "detector.cli", "drift.cli", "exporters.cli",
                   "wattwatch.demo"]


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()  # INFO until the settings, once loaded, set WATTWATCH_LOG_LEVEL's level
    try:
        args.func(args)
    except WattwatchError as exc:
        print(f"wattwatch {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wattwatch {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen fault: one line, traceback at DEBUG
        logs.unexpected(logs.get(args.command), f"wattwatch {args.command} stopped on an unexpected error", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
