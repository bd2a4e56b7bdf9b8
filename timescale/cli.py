"""`wattwatch db ...`: migrate, status, maintain, dictionary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wattwatch.arguments import TIME_HELP, timestamp
from wattwatch.settings import load_settings


def cmd_migrate(args: argparse.Namespace) -> None:
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


def cmd_status(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.status import format_status, status

    with connect(load_settings()) as conn:
        report = status(conn)
    print(json.dumps(report, indent=2) if args.json else format_status(report))


def cmd_maintain(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.maintenance import maintain

    settings = load_settings()
    with connect(settings) as conn:
        done = maintain(conn, settings, refresh_from=args.refresh_from,
                        refresh_to=args.refresh_to, refresh_all=args.all)
    print("\n".join(done))


def cmd_dictionary(args: argparse.Namespace) -> None:
    from timescale.connect import connect
    from timescale.dictionary import render

    with connect(load_settings()) as conn:
        sys.stdout.write(render(conn))


def cmd_backup(args: argparse.Namespace) -> None:
    from timescale.backup import backup

    settings = load_settings()
    done = backup(settings.database_url.get_secret_value(), args.path, settings.pg_bin_dir)
    print(f"backed up to {done.path} ({done.size_bytes / 1e6:.1f} MB) in {done.seconds:.1f} s")


def cmd_restore(args: argparse.Namespace) -> None:
    from timescale.backup import restore

    settings = load_settings()
    done = restore(settings.database_url.get_secret_value(), args.path, settings.pg_bin_dir)
    print(f"restored {done.path} in {done.seconds:.1f} s; run `wattwatch db migrate` if this "
          "wattwatch has newer migrations than the backup")


def register(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="database schema and maintenance",
                             description="Database schema, status and maintenance.")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    migrate = db_commands.add_parser(
        "migrate", help="apply pending migrations",
        description="Apply pending migrations in order, each in a transaction, under an advisory "
        "lock; a no-op when nothing is pending. Enables login for each role whose "
        "WATTWATCH_<ROLE>_PASSWORD is set.")
    migrate.set_defaults(func=cmd_migrate)
    status = db_commands.add_parser(
        "status", help="migrations, TimescaleDB version, license mode, hypertables",
        description="Applied and pending migrations, TimescaleDB version and license mode, "
        "hypertables and their chunk counts.")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)
    maintain = db_commands.add_parser(
        "maintain", help="chunk sizing, retention, compression policies, rollup refresh",
        description="Both modes: size the chunk interval of new readings and scores chunks to "
        "the fleet (WATTWATCH_CHUNK_TARGET_ROWS). apache mode: drop chunks older than the "
        "retention ages and refresh the rollup tables. timescale mode: align retention and "
        "compression policies with the configured ages and refresh the continuous aggregates. "
        "Refreshes the last 2 days unless told.")
    maintain.add_argument("--refresh-from", type=timestamp, metavar="TS",
                          help=f"start of the rollup refresh window: {TIME_HELP}")
    maintain.add_argument("--refresh-to", type=timestamp, metavar="TS",
                          help=f"end of the rollup refresh window: {TIME_HELP}")
    maintain.add_argument("--all", action="store_true",
                          help="refresh the rollups over every stored reading")
    maintain.set_defaults(func=cmd_maintain)
    dictionary = db_commands.add_parser(
        "dictionary", help="print the data dictionary (Markdown) from the schema's comments",
        description="Print the data dictionary, generated from the schema's comments, as Markdown.")
    dictionary.set_defaults(func=cmd_dictionary)
    backup = db_commands.add_parser(
        "backup", help="dump the database to a file (pg_dump custom format)",
        description="Dump the whole database with pg_dump's custom format, hypertables and "
        "TimescaleDB's catalog included. The file appears only once the dump is complete. "
        "pg_dump comes from WATTWATCH_PG_BIN_DIR or PATH (the server's major version or newer).")
    backup.add_argument("path", type=Path, metavar="FILE")
    backup.set_defaults(func=cmd_backup)
    restore = db_commands.add_parser(
        "restore", help="restore a backup into an empty database, the TimescaleDB way",
        description="Restore a `db backup` file into the empty database of WATTWATCH_DATABASE_URL: "
        "timescaledb_pre_restore(), pg_restore, timescaledb_post_restore(). The server must run "
        "the backup's TimescaleDB version.")
    restore.add_argument("path", type=Path, metavar="FILE")
    restore.set_defaults(func=cmd_restore)
