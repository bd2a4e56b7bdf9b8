"""Whether the connected role may do what only a relation's owner may (ALTER, set chunk
intervals, refresh continuous aggregates)."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg


def owns_all(conn: psycopg.Connection, relations: Iterable[str]) -> bool:
    """Whether the connected role has the owner's rights on every relation (superusers do)."""
    owned = conn.execute(
        "SELECT bool_and(pg_has_role(current_user, c.relowner, 'USAGE')) FROM pg_class c"
        " WHERE c.oid = ANY(%s::regclass[])", (list(relations),)
    ).fetchone()[0]
    return bool(owned)
