"""The `wattwatch` command: one subcommand per service, --help everywhere.

Exit codes: 0 success, 1 the command could not do its job (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Callable

from wattwatch import __version__
from wattwatch.errors import WattwatchError
from wattwatch.settings import load_settings

# Subcommands that later releases fill; until then they say so and fail.
PLANNED = {
    "ingest": "load readings from files, replay them live or simulate meters",
    "detect": "train anomaly models and score readings",
    "drift": "compare recent data with its baseline and report drift",
    "export": "serve the KPI exporter's Prometheus metrics",
    "demo": "run the whole stack natively with demo data",
}


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 timestamp such as 2026-01-31T00:00:00+00:00, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"timestamp {text!r} needs a UTC offset, e.g. +00:00")
    return value


def cmd_db_migrate(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.migrate import migrate

    settings = load_settings()
    with connect(settings) as conn:
        result = migrate(conn, settings)
    if result.applied:
        for migration in result.applied:
            print(f"applied {migration.path.name}")
        print(f"{len(result.applied)} migration(s) applied in {result.mode} mode")
    else:
        print(f"nothing to do: all {result.up_to_date} migrations already applied ({result.mode} mode)")
    for role in result.logins:
        print(f"role {role}: login enabled with the configured password")


def cmd_db_status(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.status import format_status, status

    with connect(load_settings()) as conn:
        report = status(conn)
    print(json.dumps(report, indent=2) if args.json else format_status(report))


def cmd_db_maintain(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.maintenance import maintain

    settings = load_settings()
    with connect(settings) as conn:
        done = maintain(
            conn,
            settings,
            refresh_from=args.refresh_from,
            refresh_to=args.refresh_to,
            refresh_all=args.all,
        )
    print("\n".join(done))


def cmd_db_dictionary(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.dictionary import render

    with connect(load_settings()) as conn:
        sys.stdout.write(render(conn))


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

    db = commands.add_parser("db", help="database schema and maintenance",
                             description="Database schema, status and maintenance.")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    migrate = db_commands.add_parser(
        "migrate", help="apply pending migrations",
        description="Apply pending migrations in order, each in a transaction, under an advisory "
        "lock; a no-op when nothing is pending. Enables login for each role whose "
        "WATTWATCH_<ROLE>_PASSWORD is set.")
    migrate.set_defaults(func=cmd_db_migrate)
    status = db_commands.add_parser(
        "status", help="migrations, TimescaleDB version, license mode, hypertables",
        description="Applied and pending migrations, TimescaleDB version and license mode, "
        "hypertables and their chunk counts.")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_db_status)
    maintain = db_commands.add_parser(
        "maintain", help="retention, compression policies, rollup refresh",
        description="apache mode: drop chunks older than the retention ages and refresh the rollup "
        "tables. timescale mode: align retention and compression policies with the configured "
        "ages and refresh the continuous aggregates. Refreshes the last 2 days unless told.")
    maintain.add_argument("--refresh-from", type=_timestamp, metavar="TS",
                          help="start of the rollup refresh window (ISO 8601 with offset)")
    maintain.add_argument("--refresh-to", type=_timestamp, metavar="TS",
                          help="end of the rollup refresh window (ISO 8601 with offset)")
    maintain.add_argument("--all", action="store_true",
                          help="refresh the rollups over every stored reading")
    maintain.set_defaults(func=cmd_db_maintain)
    dictionary = db_commands.add_parser(
        "dictionary", help="print the data dictionary (Markdown) from the schema's comments",
        description="Print the data dictionary, generated from the schema's comments, as Markdown.")
    dictionary.set_defaults(func=cmd_db_dictionary)

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
