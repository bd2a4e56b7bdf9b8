"""Which TimescaleDB edition the server runs, and so which storage mode the schema uses.

'timescale' (community license, the compose image): continuous aggregates, compression and
policies exist. 'apache' (Apache-only builds such as Debian's): they raise "not supported under
the current apache license", so rollups are job-maintained tables and retention is a command.
"""

from __future__ import annotations

import psycopg

from wattwatch.errors import WattwatchError

MODES = ("apache", "timescale")


def server_license(conn: psycopg.Connection) -> str | None:
    """The server's `timescaledb.license`, None before the extension exists in this database.

    The setting is only defined once the extension's library is loaded, which happens when the
    extension exists in the connected database; the preloaded loader alone does not define it.
    """
    loader, value = conn.execute(
        "SELECT current_setting('timescaledb.disable_load', true),"
        " current_setting('timescaledb.license', true)"
    ).fetchone()
    if not loader:
        raise WattwatchError(
            "TimescaleDB is not loaded on this server: "
            "add timescaledb to shared_preload_libraries and restart PostgreSQL"
        )
    if not value:
        return None
    if value not in MODES:
        raise WattwatchError(f"unknown timescaledb.license {value!r}; expected one of {MODES}")
    return value


def timescaledb_version(conn: psycopg.Connection) -> str | None:
    """The installed extension's version in this database, None before the first migration."""
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return row[0] if row else None
