"""Configuration errors: clear, naming the variable, and never echoing a password."""

from __future__ import annotations

import os

import psycopg
import pytest

from timescale.connect import connect_url, describe_url
from wattwatch.errors import WattwatchError
from wattwatch.settings import URL_EXAMPLE, load_settings

# Malformed URLs and the pieces of their passwords (the words kiwi, mango and papaya appear in
# no message text, so finding one means a password leaked), with what the message must say.
MALFORMED = [
    ("postgresql://u:kiwi@mango@db.example:5432/db", ["kiwi", "mango"], "more than one '@'"),
    ("postgresql://u:kiwi@@db.example:5432/db", ["kiwi"], "more than one '@'"),
    ("postgresql://u@kiwi:mango@db.example/db", ["kiwi", "mango"], "more than one '@'"),
    ("postgresql://u:kiwi/mango@db.example:5432/db", ["kiwi", "mango"], "comes after the host"),
    ("postgresql://u:kiwi?mango@db.example:5432/db", ["kiwi", "mango"], "comes after the host"),
    ("postgresql://u:kiwi#mango@db.example:5432/db", ["kiwi", "mango"], "comes after the host"),
    ("postgresql://u:4242?mango@db.example:5432/db", ["4242", "mango"], "comes after the host"),
    ("postgresql://u:kiwi@db.example:notaport/db", ["kiwi"], "the port is not a number"),
    ("postgres://u:kiwi@db.example:99999/db", ["kiwi"], "the port is not a number"),
    ("postgresql://u:kiwi%zzmango@db.example:5432/db", ["kiwi", "mango"], "a '%' is not followed"),
    ("postgresql://u:kiwi mango@db.example:5432/db", ["kiwi", "mango"], "contains a space"),
    ("postgresql://u:kiwi[mango@db.example:5432/db", ["kiwi", "mango"], "'[' or ']' is unbalanced"),
    ("postgresql://u:kiwi@[::1:5432/db", ["kiwi"], "'[' or ']' is unbalanced"),
    ("postgresql://u:kiwi@db.example:5432/db?mango=papaya", ["kiwi"], "query parameter"),
    ("postgresql://u:kiwi@db.example:5432/db#mango", ["kiwi"], "libpq would read another dbname"),
    ("postgresql://u:kiwi@:5432/db", ["kiwi"], "names no host"),
    ("http://u:kiwi@db.example:5432/db", ["kiwi"], "expected a PostgreSQL URL"),
    ("POSTGRESQL://u:kiwi@db.example:5432/db", ["kiwi"], "expected a PostgreSQL URL"),
    ("u:kiwi@db.example:5432/db", ["kiwi"], "expected a PostgreSQL URL"),
]


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """No WATTWATCH_* variable and no .env file but those a test sets."""
    for name in list(os.environ):
        if name.startswith("WATTWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def configuration_error(environment, **variables) -> str:
    for name, value in variables.items():
        environment.setenv(f"WATTWATCH_{name.upper()}", value)
    with pytest.raises(WattwatchError) as error:
        load_settings()
    return str(error.value)


@pytest.mark.parametrize("url, secrets, reason", MALFORMED, ids=[u for u, *_ in MALFORMED])
def test_malformed_url_message_holds_no_password(environment, url, secrets, reason):
    message = configuration_error(environment, database_url=url)
    assert message.startswith("configuration error: WATTWATCH_DATABASE_URL is invalid: ")
    assert reason in message
    assert URL_EXAMPLE in message
    for secret in secrets:
        assert secret not in message.lower()


@pytest.mark.parametrize("url, secrets, reason", MALFORMED, ids=[u for u, *_ in MALFORMED])
def test_connect_and_describe_never_quote_a_malformed_url(url, secrets, reason):
    # the same check guards connect_url (libpq's own parse errors quote the URL) and describe_url
    with pytest.raises(WattwatchError) as error:
        connect_url(url, attempts=1, timeout=1)
    assert str(error.value).startswith("cannot connect to the database: ")
    assert reason in str(error.value)
    described = describe_url(url)
    for secret in secrets:
        assert secret not in str(error.value).lower() and secret not in described.lower()


@pytest.mark.parametrize("url, password", [
    ("postgresql://u:kiwi%40mango@db.example:5432/db", "kiwi@mango"),
    ("postgresql://u:kiwi%2Fmango%3Fpapaya%23@db.example:5432/db", "kiwi/mango?papaya#"),
    ("postgresql://u:kiwi%25mango%20papaya@db.example:5432/db", "kiwi%mango papaya"),
    ("postgresql://u:kiwi:mango@db.example:5432/db", "kiwi:mango"),
    ("postgresql://u:kiwi@[::1]:5432/db?connect_timeout=3", "kiwi"),
    ("postgresql://u:kiwi@DB.Example/db", "kiwi"),
])
def test_encoded_passwords_are_accepted_as_libpq_reads_them(environment, url, password):
    environment.setenv("WATTWATCH_DATABASE_URL", url)
    settings = load_settings()
    params = psycopg.conninfo.conninfo_to_dict(settings.database_url.get_secret_value())
    assert params["password"] == password
    assert params["user"] == "u"
    assert password not in describe_url(url)
