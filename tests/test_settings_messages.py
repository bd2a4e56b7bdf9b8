"""Configuration errors: clear, naming the variable, never echoing a password, no NaN accepted."""

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


@pytest.mark.parametrize("variable", ["detector_train_days", "detector_model_max_age_days",
                                      "detector_interval_seconds", "connect_timeout_seconds",
                                      "drift_psi_warning", "drift_current_days"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity"])
def test_float_settings_refuse_nan_and_infinities(environment, variable, value):
    message = configuration_error(environment, database_url="postgresql://u@db.example/db",
                                  **{variable: value})
    assert message == (f"configuration error: WATTWATCH_{variable.upper()} is invalid: "
                       f"must be a finite number, got {value}")


def test_every_float_setting_refuses_nan(environment):
    from wattwatch.settings import Settings

    floats = [name for name, field in Settings.model_fields.items() if field.annotation is float]
    assert len(floats) >= 10
    for name in floats:
        message = configuration_error(environment, database_url="postgresql://u@db.example/db",
                                      **{name: "nan"})
        assert f"WATTWATCH_{name.upper()} is invalid: must be a finite number, got nan" in message
        environment.delenv(f"WATTWATCH_{name.upper()}")


def test_ingest_ranges_refuse_nan_naming_the_value(environment):
    message = configuration_error(environment, database_url="postgresql://u@db.example/db",
                                  ingest_ranges='{"voltage_v": [180, Infinity]}')
    assert message == ("configuration error: WATTWATCH_INGEST_RANGES is invalid: voltage_v[1]: "
                       "must be a finite number, got inf")


def test_a_finite_value_out_of_range_still_names_its_bound(environment):
    message = configuration_error(environment, database_url="postgresql://u@db.example/db",
                                  detector_train_days="5000")
    assert message == ("configuration error: WATTWATCH_DETECTOR_TRAIN_DAYS is invalid: "
                       "Input should be less than or equal to 3660")
