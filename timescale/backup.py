"""`wattwatch db backup` and `db restore`: pg_dump and pg_restore, the TimescaleDB way.

A backup is pg_dump's custom format of the whole database (hypertables come out with their
chunks and TimescaleDB's catalog). A restore goes into an empty database: create the extension,
`timescaledb_pre_restore()` (stops TimescaleDB's background jobs and lets the catalog be written
as is), pg_restore, then `timescaledb_post_restore()`, run whatever happened, so the database is
never left in restoring mode. The server's TimescaleDB version must be the backup's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from timescale.connect import describe_url
from wattwatch.errors import WattwatchError


@dataclass
class Done:
    path: Path
    size_bytes: int
    seconds: float


def _program(name: str, bin_dir: str | None) -> str:
    found = shutil.which(name, path=bin_dir) if bin_dir else shutil.which(name)
    if not found:
        where = bin_dir or "PATH"
        raise WattwatchError(f"{name} not found in {where}; install the PostgreSQL client of the "
                             "server's major version or set WATTWATCH_PG_BIN_DIR")
    return found


def _libpq_env(url: str) -> dict[str, str]:
    """The URL as libpq environment variables, so no password shows in a process list."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
             "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({names[k]: str(v) for k, v in params.items() if k in names})
    return env


def _failure(program: str, result: subprocess.CompletedProcess) -> WattwatchError:
    lines = [line for line in result.stderr.decode(errors="replace").splitlines()
             if "error" in line.lower() or "fatal" in line.lower()]
    reason = (lines or result.stderr.decode(errors="replace").splitlines() or ["no message"])[0]
    return WattwatchError(f"{program} failed (exit {result.returncode}): {reason.strip()}")


def backup(url: str, path: Path, bin_dir: str | None = None) -> Done:
    """Dump the database to `path`; a failed or interrupted dump never leaves a file there."""
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        result = subprocess.run([_program("pg_dump", bin_dir), "--format=custom", "--no-password"],
                                stdout=out, stderr=subprocess.PIPE, env=_libpq_env(url))
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise _failure("pg_dump", result)
    partial.replace(path)
    return Done(path, path.stat().st_size, time.perf_counter() - started)


def restore(url: str, path: Path, bin_dir: str | None = None) -> Done:
    """Restore `path` into the (empty) database at `url`."""
    if not path.is_file():
        raise WattwatchError(f"{path}: no such backup file")
    pg_restore = _program("pg_restore", bin_dir)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        if tables:
            raise WattwatchError(f"database {describe_url(url)} is not empty ({tables} tables); "
                                 "restore into a new, empty database")
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute("SELECT timescaledb_pre_restore()")
        try:
            with path.open("rb") as dump:
                # --no-owner: the restoring role owns what it restores; the grants to the service
                # roles are kept (roles are cluster-wide: `db migrate` creates them on a new server).
                result = subprocess.run([pg_restore, "--no-owner", "--exit-on-error", "--no-password",
                                         "--dbname", _libpq_env(url)["PGDATABASE"]],
                                        stdin=dump, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env=_libpq_env(url))
        finally:
            conn.execute("SELECT timescaledb_post_restore()")
    if result.returncode != 0:
        raise _failure("pg_restore", result)
    return Done(path, path.stat().st_size, time.perf_counter() - started)
