"""Scratch databases beside a superuser's, for the tests and the benchmark scripts."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from timescale.connect import with_database


def create_database(admin_url: str, name: str, replace: bool = False) -> str:
    """Create an empty database `name` on admin_url's server (first dropping one of that name
    when `replace`); returns its URL, with admin_url's credentials."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if replace:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database `url` points at, even while sessions are connected to it."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
