"""Open database connections with a bounded number of attempts and a clear error."""

from __future__ import annotations

import math
import time
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from wattwatch.errors import WattwatchError, first_line
from wattwatch.settings import Settings, url_problem

# TCP keepalives on both ends of every connection: a worker notices a vanished server, and
# the server drops a vanished worker's session (and the advisory locks that say it is alive
# and which meters it is scoring) within about idle + interval x count seconds, not after
# the operating system's two hours.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 5, 3
_CLIENT_KEEPALIVES = {"keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE,
                      "keepalives_interval": KEEPALIVE_INTERVAL,
                      "keepalives_count": KEEPALIVE_COUNT}
_SERVER_KEEPALIVES = (f"-c tcp_keepalives_idle={KEEPALIVE_IDLE}"
                      f" -c tcp_keepalives_interval={KEEPALIVE_INTERVAL}"
                      f" -c tcp_keepalives_count={KEEPALIVE_COUNT}"
                      f" -c tcp_user_timeout={KEEPALIVE_IDLE * 1000 * KEEPALIVE_COUNT}")


def describe_url(url: str) -> str:
    """Where a URL points, without its password: 'user@host:port/dbname'.

    A URL that url_problem() finds fault with is described only as malformed: parts of it may
    be pieces of its password.
    """
    if url_problem(url):
        return "a malformed URL (not shown: it may hold a password)"
    params = psycopg.conninfo.conninfo_to_dict(url)
    return "{user}@{host}:{port}/{dbname}".format(
        user=params.get("user", "?"),
        host=params.get("host", "localhost"),
        port=params.get("port", "5432"),
        dbname=params.get("dbname", "?"),
    )


def with_database(url: str, dbname: str, user: str | None = None, password: str | None = None) -> str:
    """The same server URL pointing at another database and, if given, as another user."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{quote(user, safe='')}:{quote(password or '', safe='')}@{netloc.rsplit('@', 1)[-1]}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(dbname), parts.query, parts.fragment))


def connect_url(
    url: str,
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    autocommit: bool = False,
    application_name: str = "wattwatch",
) -> psycopg.Connection:
    """Connect, retrying with backoff; after `attempts` failures raise one line naming the server.

    A URL that cannot be read is refused first, in words that never quote it (libpq's own
    errors would).
    """
    problem = url_problem(url)
    if problem:
        raise WattwatchError(f"cannot connect to the database: {problem}")
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return psycopg.connect(
                url,
                connect_timeout=max(1, math.ceil(timeout)),
                autocommit=autocommit,
                application_name=application_name,
                **_keepalives(url),
            )
        except psycopg.OperationalError as exc:
            last = exc
            if attempt < attempts:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
    raise WattwatchError(
        f"cannot connect to the database at {describe_url(url)} "
        f"after {attempts} attempt(s): {first_line(last)}"
    )


def _keepalives(url: str) -> dict[str, object]:
    """libpq's keepalive parameters, and the server's through `options`, before any the URL
    gives (libpq sends one options string; the URL's settings win)."""
    given = psycopg.conninfo.conninfo_to_dict(url).get("options")
    return {**_CLIENT_KEEPALIVES,
            "options": f"{_SERVER_KEEPALIVES} {given}" if given else _SERVER_KEEPALIVES}


def connect(settings: Settings, **kwargs) -> psycopg.Connection:
    """Connect to the configured database with the configured timeout and attempts."""
    return connect_url(
        settings.database_url.get_secret_value(),
        timeout=settings.connect_timeout_seconds,
        attempts=settings.connect_attempts,
        **kwargs,
    )
