"""compose.yaml, the Dockerfile, .env.example and the database init script, checked for real
where it can be done without a Docker engine (there is none here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml

from tests.conftest import _unavailable
from timescale.connect import with_database
from tests.test_cli import run_cli
from wattwatch.cli import PLANNED, build_parser
from wattwatch.settings import Settings

PROJECT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((PROJECT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def wattwatch_services():
    return {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("wattwatch:")}


def test_timescaledb_is_pinned_healthchecked_and_persistent():
    db = SERVICES["timescaledb"]
    assert db["image"] == "timescale/timescaledb:2.19.3-pg17"
    assert db["healthcheck"]["test"][0] == "CMD-SHELL" and "pg_isready" in db["healthcheck"]["test"][1]
    volume = db["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]


def test_every_image_tag_is_pinned():
    for name, service in SERVICES.items():
        image = service["image"]
        assert re.search(r":\d+(\.\d+)+", image), f"{name}: image {image!r} has no pinned version tag"


def test_migrate_is_one_shot_after_a_healthy_database():
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["db", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["timescaledb"]["condition"] == "service_healthy"


def test_every_command_exists_in_the_cli():
    parser = build_parser()
    for name, service in wattwatch_services().items():
        args = parser.parse_args(service["command"])
        assert args.command not in PLANNED, f"{name} runs {service['command']}, which is not available yet"


def test_every_mounted_file_exists():
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (PROJECT / source).exists(), f"{name} mounts missing {source}"


def test_no_new_privileges_internal_network_no_published_ports_no_superuser():
    assert COMPOSE["networks"]["backend"]["internal"] is True
    for name, service in SERVICES.items():
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "ports" not in service, f"{name} publishes a port"
    for name, service in wattwatch_services().items():
        url = service["environment"]["WATTWATCH_DATABASE_URL"]
        assert urlsplit(url).username != "postgres", f"{name} connects as the superuser"


def test_dockerfile_pins_its_base_and_runs_unprivileged():
    text = (PROJECT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+$", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["wattwatch"]' in text


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (PROJECT / ".env.example").read_text().splitlines()
             if line and not line.startswith("#")]
    return dict(pairs)


def test_env_example_documents_every_variable():
    documented = env_example()
    for field in Settings.model_fields:
        assert f"WATTWATCH_{field.upper()}" in documented
    used_by_compose = set(re.findall(r"\$\{(\w+)", (PROJECT / "compose.yaml").read_text()))
    assert used_by_compose <= set(documented)
    # The documented values are themselves valid configuration.
    Settings(_env_file=None, **{k.removeprefix("WATTWATCH_").lower(): v
                                for k, v in documented.items() if k.startswith("WATTWATCH_")})


@pytest.fixture(scope="module")
def fresh_cluster(tmp_path_factory):
    """A second, empty TimescaleDB cluster: the compose init runs on a server without our roles."""
    state = tmp_path_factory.mktemp("fresh-cluster")
    env = {k: v for k, v in os.environ.items() if k != "WATTWATCH_TEST_DATABASE_URL"}
    script = [sys.executable, str(PROJECT / "scripts" / "stack.py")]
    started = subprocess.run([*script, "up", "--state", str(state)], env=env,
                             capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        _unavailable(started.stderr.strip())
    yield json.loads(started.stdout)["database_url"]
    subprocess.run([*script, "down", "--state", str(state)], env=env, timeout=120)


def test_init_script_lets_migrations_run_without_the_superuser(fresh_cluster):
    admin = urlsplit(fresh_cluster)
    with psycopg.connect(fresh_cluster, autocommit=True) as conn:
        conn.execute("CREATE DATABASE wattwatch")
    env = dict(os.environ, PGHOST=admin.hostname, PGPORT=str(admin.port), PGPASSWORD=admin.password,
               POSTGRES_USER="postgres", POSTGRES_DB="wattwatch", WATTWATCH_OWNER_PASSWORD="owner-pw")
    script = PROJECT / "timescale" / "docker-init" / "10-wattwatch-owner.sh"
    for _ in range(2):  # idempotent
        result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    owner_url = with_database(fresh_cluster, "wattwatch", "wattwatch_owner", "owner-pw")
    env = {"WATTWATCH_DATABASE_URL": owner_url, "WATTWATCH_READER_PASSWORD": "reader-pw"}
    migrated = run_cli(["db", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr
    assert "role wattwatch_reader: login enabled" in migrated.stdout
    with psycopg.connect(owner_url) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
    reader_url = with_database(fresh_cluster, "wattwatch", "wattwatch_reader", "reader-pw")
    with psycopg.connect(reader_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO meters (meter_id) VALUES ('x')")
