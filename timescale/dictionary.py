"""The data dictionary (table, column, type, unit, meaning), generated from the schema's comments.

Units are written at the end of a column comment in brackets, e.g. 'Mean voltage [V]'.
`docs/data-dictionary.md` is this module's output; a test keeps the two identical.
"""

from __future__ import annotations

import re

import psycopg

UNIT = re.compile(r"^(?P<meaning>.*?)\s*\[(?P<unit>[^\]]+)\]$", re.S)
HEADER = """# Data dictionary

Every table and view of the wattwatch schema, generated from the comments in the migrations by
`wattwatch db dictionary`. It is the same in both license modes: `readings_hourly` and
`readings_daily` are continuous aggregates under the timescale license and tables kept by
`refresh_readings_rollups()` under the apache license, with the same columns.
A test fails when this file and the schema disagree.
"""


def relations(conn: psycopg.Connection) -> list[tuple[str, str | None]]:
    """(name, comment) of every table and view in the public schema, by name."""
    return conn.execute(
        """
        SELECT c.relname, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
        ORDER BY c.relname
        """
    ).fetchall()


def columns(conn: psycopg.Connection, relation: str) -> list[tuple[str, str, str | None]]:
    """(name, type, comment) of a relation's columns in order."""
    return conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum)
        FROM pg_attribute a
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (f"public.{relation}",),
    ).fetchall()


def split_unit(comment: str | None) -> tuple[str, str]:
    """'Mean voltage [V]' -> ('Mean voltage', 'V'); no brackets -> (comment, '')."""
    if not comment:
        return "", ""
    match = UNIT.match(comment.strip())
    return (match["meaning"], match["unit"]) if match else (comment.strip(), "")


def render(conn: psycopg.Connection) -> str:
    """The whole dictionary as Markdown."""
    parts = [HEADER]
    for relation, comment in relations(conn):
        parts.append(f"\n## {relation}\n\n{comment or ''}\n\n| column | type | unit | meaning |\n|---|---|---|---|")
        for name, sql_type, column_comment in columns(conn, relation):
            meaning, unit = split_unit(column_comment)
            parts.append(f"| {name} | {sql_type} | {unit} | {meaning.replace('|', '/')} |")
    return "\n".join(parts) + "\n"
