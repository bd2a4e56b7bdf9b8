"""Numbered SQL migrations: discovered, planned for a license mode, applied once each under a lock.

Files are `timescale/migrations/NNNN_name.sql` (the same SQL in every mode) or a pair
`NNNN_name.apache.sql` / `NNNN_name.timescale.sql` (one per license mode, see `license.py`).
A landed file is never edited: its checksum is recorded and a changed file stops `migrate`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from timescale.chunks import plan_chunks
from timescale.license import MODES, server_license
from wattwatch.errors import WattwatchError, first_line
from wattwatch.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(apache|timescale))?\.sql$")
# Session advisory lock key shared by every migrator ("wattwatc" in ASCII).
LOCK_KEY = 0x7761747477617463 - 2**63
LOGIN_ROLES = {
    "wattwatch_reader": "reader_password",
    "wattwatch_ingest": "ingest_password",
    "wattwatch_jobs": "jobs_password",
}

BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS wattwatch_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    mode       text NOT NULL CHECK (mode IN ('apache', 'timescale')),
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wattwatch_migrations IS
    'Schema migrations applied by wattwatch db migrate, one row per numbered file';
COMMENT ON COLUMN wattwatch_migrations.version IS 'Migration number, from the file name';
COMMENT ON COLUMN wattwatch_migrations.name IS 'Migration name, from the file name';
COMMENT ON COLUMN wattwatch_migrations.applied_at IS 'When the migration was applied';
COMMENT ON COLUMN wattwatch_migrations.mode IS
    'License mode the migration was applied in: apache or timescale';
COMMENT ON COLUMN wattwatch_migrations.checksum IS
    'SHA-256 of the SQL applied; a landed migration file must never change';
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    mode: str | None  # None: one file for every mode
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass
class MigrateResult:
    mode: str
    applied: list[Migration] = field(default_factory=list)
    up_to_date: int = 0
    logins: list[str] = field(default_factory=list)


def discover(directory: Path = MIGRATIONS_DIR) -> dict[int, list[Migration]]:
    """All migration files by version; a file named off-pattern is an error, not ignored."""
    found: dict[int, list[Migration]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise WattwatchError(
                f"{path}: migration file name must look like NNNN_name.sql or "
                f"NNNN_name.(apache|timescale).sql, got {path.name!r}"
            )
        version, name, mode = int(match[1]), match[2], match[3]
        found.setdefault(version, []).append(Migration(version, name, mode, path))
    return found


def plan(mode: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations to apply in `mode`, in order, checking that versions are consistent."""
    if mode not in MODES:
        raise WattwatchError(f"unknown license mode {mode!r}; expected one of {MODES}")
    chosen = []
    for version, files in sorted(discover(directory).items()):
        names = {m.name for m in files}
        if len(names) != 1:
            raise WattwatchError(f"migration {version:04d} has several names: {sorted(names)}")
        common = [m for m in files if m.mode is None]
        specific = [m for m in files if m.mode == mode]
        if common and len(files) > 1:
            raise WattwatchError(
                f"migration {version:04d} has both a common file and mode-specific files"
            )
        if not (common or specific):
            raise WattwatchError(f"migration {version:04d} has no file for mode {mode!r}")
        chosen.append((common or specific)[0])
    return chosen


def applied(conn: psycopg.Connection) -> dict[int, tuple[str, str, str]]:
    """Recorded migrations: version -> (name, mode, checksum); empty before the first run."""
    exists = conn.execute("SELECT to_regclass('wattwatch_migrations')").fetchone()[0]
    if exists is None:
        return {}
    rows = conn.execute("SELECT version, name, mode, checksum FROM wattwatch_migrations")
    return {version: (name, mode, checksum) for version, name, mode, checksum in rows}


def schema_mode(conn: psycopg.Connection) -> str | None:
    """The mode the schema was built in (from the bookkeeping table), None if never migrated."""
    modes = {mode for _, mode, _ in applied(conn).values()}
    if len(modes) > 1:
        raise WattwatchError(f"the schema mixes license modes {sorted(modes)}; see docs/operations.md (License modes)")
    return modes.pop() if modes else None


def _policy_settings(conn: psycopg.Connection, settings: Settings) -> None:
    # Migrations read storage-policy ages and the planned chunk interval with current_setting();
    # transaction-local.
    values = {name: str(getattr(settings, name)) for name in
              ("readings_retention_days", "scores_retention_days", "compress_after_days")}
    values["chunk_interval_seconds"] = str(plan_chunks(conn, settings).interval.total_seconds())
    for name, value in values.items():
        conn.execute("SELECT set_config(%s, %s, true)", (f"wattwatch.{name}", value))


def _enable_logins(conn: psycopg.Connection, settings: Settings) -> list[str]:
    enabled = []
    for role, field_name in LOGIN_ROLES.items():
        secret = getattr(settings, field_name)
        if secret is None:
            continue
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(secret.get_secret_value())
            )
        )
        enabled.append(role)
    return enabled


def migrate(
    conn: psycopg.Connection, settings: Settings, directory: Path = MIGRATIONS_DIR
) -> MigrateResult:
    """Apply every pending migration, each in its own transaction, holding the migrator lock."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        server_license(conn)  # fails clearly when TimescaleDB is not preloaded
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute(BOOKKEEPING)
        license_mode = server_license(conn)
        mode = schema_mode(conn) or license_mode
        if mode == "timescale" and license_mode == "apache":
            raise WattwatchError(
                "the schema was built in 'timescale' mode but this server runs the apache "
                "license: continuous aggregates and policies cannot work here"
            )
        done = applied(conn)
        result = MigrateResult(mode=mode)
        for migration in plan(mode, directory):
            if migration.version in done:
                _, _, checksum = done[migration.version]
                if checksum != migration.checksum:
                    raise WattwatchError(
                        f"{migration.path.name} was edited after it was applied (checksum "
                        "differs); landed migrations are never edited: add a new numbered file"
                    )
                result.up_to_date += 1
                continue
            try:
                with conn.transaction():
                    _policy_settings(conn, settings)
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO wattwatch_migrations (version, name, mode, checksum)"
                        " VALUES (%s, %s, %s, %s)",
                        (migration.version, migration.name, mode, migration.checksum),
                    )
            except psycopg.Error as exc:
                raise WattwatchError(
                    f"migration {migration.path.name} failed and was rolled back: {first_line(exc)}"
                ) from exc
            result.applied.append(migration)
        unknown = sorted(set(done) - {m.version for m in plan(mode, directory)})
        if unknown:
            raise WattwatchError(
                f"the database has migrations this wattwatch does not know: {unknown}; "
                "upgrade wattwatch before running it against this database"
            )
        with conn.transaction():
            result.logins = _enable_logins(conn, settings)
        return result
    except psycopg.Error as exc:
        raise WattwatchError(f"migration failed: {first_line(exc)}") from exc
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
