"""Session advisory locks keyed on names (meters): one key space per job, tried many at once.

A key is `hashtextextended(name, seed)`: each job's seed keeps its keys apart from the other
jobs' and from any other advisory lock of the database (migrations, rollup refreshes).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg


def seed(label: bytes) -> int:
    """A seed from up to eight bytes of ASCII, as a signed bigint."""
    return int.from_bytes(label.ljust(8, b"\0"), "big") - 2**63


def key(seed_value: int, name: str = "%s") -> str:
    """SQL of the lock key of `name` (a placeholder or a column)."""
    return f"hashtextextended({name}, {seed_value})"


def try_locks(conn: psycopg.Connection, names: Iterable[str], seed_value: int) -> set[str]:
    """Those of the names whose lock this session holds now (taken now, or held before); the
    others are held by another session. One query for all of them; they stay held until
    unlocked or the session ends, whatever becomes of the caller's transaction."""
    names = sorted(set(names))
    if not names:
        return set()
    return {name for (name,) in conn.execute(
        "SELECT m FROM unnest(%s::text[]) AS m WHERE pg_try_advisory_lock("
        + key(seed_value, "m") + ")", (names,)).fetchall()}
