"""What `wattwatch db status` reports: migrations, TimescaleDB version, license mode, hypertables."""

from __future__ import annotations

import psycopg

from timescale.license import server_license, timescaledb_version
from timescale.migrate import applied, plan, schema_mode


def hypertables(conn: psycopg.Connection) -> list[dict]:
    """Each hypertable with its chunk count and chunk interval; empty before the first migration."""
    if timescaledb_version(conn) is None:
        return []
    rows = conn.execute(
        """
        SELECT h.hypertable_name, h.num_chunks, d.time_interval::text
        FROM timescaledb_information.hypertables h
        JOIN timescaledb_information.dimensions d
          ON d.hypertable_schema = h.hypertable_schema
         AND d.hypertable_name = h.hypertable_name
         AND d.dimension_number = 1
        WHERE h.hypertable_schema = 'public'
        ORDER BY h.hypertable_name
        """
    )
    return [
        {"name": name, "chunks": chunks, "chunk_interval": interval}
        for name, chunks, interval in rows
    ]


def status(conn: psycopg.Connection) -> dict:
    """A JSON-ready description of the database's schema state."""
    license_mode = server_license(conn)
    mode = schema_mode(conn)
    done = applied(conn)
    # Before the extension exists the license is unknown; the apache plan names the same files.
    pending = [m.label for m in plan(mode or license_mode or "apache") if m.version not in done]
    return {
        "timescaledb_version": timescaledb_version(conn),
        "license": license_mode,
        "schema_mode": mode,
        "applied": [f"{v:04d}_{name} ({m})" for v, (name, m, _) in sorted(done.items())],
        "pending": pending,
        "hypertables": hypertables(conn),
    }


def format_status(report: dict) -> str:
    """The human-readable form printed by `wattwatch db status`."""
    mode = report["schema_mode"] or "not migrated yet"
    lines = [
        f"TimescaleDB {report['timescaledb_version'] or '(extension not created yet)'}, "
        f"license {report['license'] or 'unknown until the extension is created'}",
        f"schema mode: {mode}",
        f"migrations applied: {len(report['applied'])}, pending: {len(report['pending'])}",
    ]
    lines += [f"  applied  {label}" for label in report["applied"]]
    lines += [f"  pending  {label}" for label in report["pending"]]
    lines.append(f"hypertables: {len(report['hypertables'])}")
    lines += [
        f"  {h['name']}: {h['chunks']} chunks, chunk interval {h['chunk_interval']}"
        for h in report["hypertables"]
    ]
    return "\n".join(lines)
