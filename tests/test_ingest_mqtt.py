"""`wattwatch ingest mqtt` against the real Mosquitto and TimescaleDB of the test stack: payload
formats, rejects, TLS with a CA file, and nothing lost or stored twice across a kill -9 of the
ingest, a broker restart and database restarts (published = loaded + duplicates + rejected)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import psycopg
import pytest

from ingest.broker import Broker, connect_async, make_client
from ingest.payloads import PayloadOptions, PayloadParser
from ingest.publisher import Publisher
from ingest.ranges import DEFAULT_RANGES
from tests.conftest import PROJECT, restart_broker, restart_database, settings_for
from tests.test_services_restart import metrics_url, scrape
from wattwatch.errors import WattwatchError
from wattwatch.stack import make_ca

ARRIVAL = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)


def parse(payload, topic="meters/m-1/readings", **options):
    parser = PayloadParser(PayloadOptions(**options), DEFAULT_RANGES, timedelta(minutes=5))
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parser.parse(topic, raw, ARRIVAL)


def test_payload_names_times_and_meters():
    ours = parse({"meter_id": "a", "time": "2024-01-01T01:00:00+01:00", "active_power_kw": 1.5,
                  "voltage_v": "230.5", "current_a": None, "other": "x"})
    assert [row for row, _, _ in ours.rows] == [
        ("a", BASE, 1.5, None, 230.5, None, None, None, None)]
    uci = parse([{"meter": "b", "ts": 1704067200, "Global_active_power": 2, "SUB_METERING_1": 3},
                 {"meter": "b", "ts": 1704067260000, "Voltage": 240}])
    assert [(row[0], row[1], row[2], row[4], row[6]) for row, _, _ in uci.rows] == [
        ("b", BASE, 2.0, None, 3.0), ("b", BASE + timedelta(minutes=1), None, 240.0, None)]
    assert [int(line) for _, line, _ in uci.rows] == [1, 2]
    mapped = parse({"power": 0.7, "at": "2024-01-01 00:00:00"}, meter_level=2,
                   mapping={"power": "active_power_kw"}, time_key="at")
    assert [row[:3] for row, _, _ in mapped.rows] == [("m-1", BASE, 0.7)]
    arrived = parse({"active_power_kw": 1}, meter_level=2)
    assert arrived.rows[0][0][1] == ARRIVAL  # no time in the payload: the arrival time


def test_payload_rejects_say_why():
    cases = {
        b"{not json": "invalid_payload",
        b"[]": "invalid_payload",
        b"[3]": "invalid_payload",
        json.dumps({"time": "2024-01-01T00:00:00Z"}).encode(): "missing_meter",
        json.dumps({"meter": "x" * 129}).encode(): "invalid_meter",
        json.dumps({"meter": "a", "time": "yesterday"}).encode(): "unparseable",
        json.dumps({"meter": "a", "time": "2030-01-01T00:00:00Z"}).encode(): "future_timestamp",
        json.dumps({"meter": "a", "voltage_v": 900}).encode(): "out_of_range",
        json.dumps({"meter": "a", "voltage_v": True}).encode(): "non_numeric",
        b'{"meter": "a", "voltage_v": NaN}': "non_numeric",
    }
    for payload, reason in cases.items():
        parsed = parse(payload)
        assert not parsed.rows and [r.reason for r in parsed.rejects] == [reason], payload
        line = parsed.rejects[0].line
        assert (line.topic, int(line)) == ("meters/m-1/readings", 1)
    assert parse(b"x").rejects[0].raw == "x"
    assert parse(b"x").rejects[0].line.digest != parse(b"y").rejects[0].line.digest
    with pytest.raises(WattwatchError, match="not a reading field"):
        parse({}, mapping={"p": "power"})


def test_broker_urls():
    assert Broker.parse("mqtt://example.org") == Broker("example.org", 1883, False)
    assert str(Broker.parse("mqtts://example.org:8884/")) == "mqtts://example.org:8884"
    for bad in ("http://x", "mqtt://", "mqtt://x/topic"):
        with pytest.raises(WattwatchError, match="expected mqtt://host:1883"):
            Broker.parse(bad)
    with pytest.raises(WattwatchError) as refused:
        Broker.parse("mqtt://user:s3cret@x")
    assert "s3cret" not in str(refused.value)


def reading(i: int) -> bytes:
    return json.dumps({"time": (BASE + timedelta(seconds=i // 10)).isoformat(),
                       "active_power_kw": round(0.1 + (i % 97) / 10, 3)}).encode()


def message(i: int) -> tuple[str, bytes]:
    """Message i: a reading of meter i % 10, or (every 50th) an unreadable payload."""
    if i % 50 == 49:
        return f"meters/m-{i % 10}/readings", f"garbage {i}".encode()
    return f"meters/m-{i % 10}/readings", reading(i)


class Sender:
    """Publishes messages with QoS 1 through its own connection; each publish is confirmed by
    the broker (its PUBACK) before it counts as published."""

    def __init__(self, mqtt_env: dict):
        self.client = client_for(mqtt_env)
        self.publisher = Publisher(self.client)
        start(self.client, mqtt_env)

    def publish(self, numbers) -> None:
        for i in numbers:
            self.publisher.publish(*message(i))
        assert self.publisher.wait(60), "the broker did not acknowledge every publish"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def client_for(mqtt_env: dict) -> mqtt.Client:
    """A client of the test broker, not yet connected."""
    settings = settings_for("postgresql://x@127.0.0.1/x", mqtt_username=mqtt_env["WATTWATCH_MQTT_USERNAME"],
                            mqtt_password=mqtt_env["WATTWATCH_MQTT_PASSWORD"],
                            mqtt_ca_file=mqtt_env.get("WATTWATCH_MQTT_CA_FILE"))
    return make_client(settings, Broker.parse(mqtt_env["WATTWATCH_MQTT_URL"]), "")


def start(client: mqtt.Client, mqtt_env: dict, ready: threading.Event | None = None) -> mqtt.Client:
    """Connect `client` and run its network loop; wait until `ready` (default: connected)."""
    if ready is None:
        ready = threading.Event()
        client.on_connect = lambda *args: ready.set()
    connect_async(client, Broker.parse(mqtt_env["WATTWATCH_MQTT_URL"]))
    client.loop_start()
    assert ready.wait(10), "the client could not connect"
    return client


class Ingest:
    """`wattwatch ingest mqtt` as a separate process, as the database role wattwatch_ingest."""

    def __init__(self, url: str, mqtt_env: dict, tmp_path, client_id: str):
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")},
                    **mqtt_env, "WATTWATCH_DATABASE_URL": url, "PYTHONPATH": str(PROJECT),
                    "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "2", "WATTWATCH_INGEST_BATCH_ROWS": "500"}
        self.tmp_path, self.client_id, self.runs = tmp_path, client_id, 0
        self.process = None

    def start(self) -> None:
        self.runs += 1
        self.log = self.tmp_path / f"ingest-{self.runs}.log"
        self.out = self.tmp_path / f"ingest-{self.runs}.json"
        with open(self.log, "w") as err, open(self.out, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wattwatch.cli", "ingest", "mqtt", "--topic", "meters/+/readings",
                 "--meter-from-topic", "2", "--client-id", self.client_id, "--json",
                 "--metrics-port", "0"], env=self.env, cwd=self.tmp_path, stdout=out, stderr=err)
        self.wait_for_log("connected to broker")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.log.read_text()
        return json.loads(self.out.read_text())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM readings), "
                            "(SELECT count(*) FROM ingest_rejects)").fetchone()


def wait_for_counts(url: str, expected: tuple[int, int], ingest: Ingest, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while (found := counts(url)) != expected:
        assert time.monotonic() < deadline, (found, expected, ingest.log.read_text()[-3000:])
        assert ingest.process.poll() is None, ingest.log.read_text()
        time.sleep(0.3)


def expected(n: int) -> tuple[int, int]:
    """(readings, rejects) for messages 0..n-1: every 50th is garbage."""
    garbage = sum(1 for i in range(n) if i % 50 == 49)
    return n - garbage, garbage


@pytest.fixture
def ingest(durable, role_url, mqtt_env, tmp_path):
    with psycopg.connect(durable, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, ingest_rejects, meters CASCADE")
    process = Ingest(role_url("wattwatch_ingest"), mqtt_env, tmp_path, "t-" + secrets.token_hex(6))
    yield process
    if process.process and process.process.poll() is None:
        process.kill()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_every_message_is_loaded_or_rejected_and_rejects_say_where(ingest, durable, mqtt_env,
                                                                   protocol):
    ingest.env["WATTWATCH_MQTT_PROTOCOL"] = protocol
    ingest.start()
    publisher = Sender(mqtt_env)
    publisher.publish(range(1000))
    publisher.publish(range(100))  # published again: duplicates, and rejects recorded once
    wait_for_counts(durable, expected(1000), ingest)
    metrics = metrics_url(ingest.log)
    deadline = time.monotonic() + 30
    while 'wattwatch_ingest_mqtt_messages_total{outcome="acknowledged"} 1100.0' not in scrape(metrics):
        assert time.monotonic() < deadline, scrape(metrics)
        time.sleep(0.3)
    assert "wattwatch_ingest_mqtt_backlog_messages 0.0" in scrape(metrics)  # all stored
    exposed = scrape(metrics)
    for line in ('wattwatch_ingest_mqtt_messages_total{outcome="received"} 1100.0',
                 'wattwatch_ingest_mqtt_messages_total{outcome="rejected"} 22.0',
                 "wattwatch_ingest_mqtt_connected 1.0",
                 'wattwatch_ingest_rows_total{outcome="duplicate"} 98.0'):
        assert line in exposed
    ages = re.findall(r'wattwatch_ingest_mqtt_last_message_age_seconds\{meter="m-\d"\} (\S+)', exposed)
    assert len(ages) == 10 and all(0 <= float(age) < 60 for age in ages)
    summary = ingest.stop()
    publisher.close()
    assert summary["read"] == 1100
    assert (summary["loaded"], summary["duplicates"], summary["rejected"]) == (980, 98, 22)
    assert summary["rejected_by_reason"] == {"invalid_payload": 22}
    with psycopg.connect(durable) as conn:
        assert conn.execute("SELECT topic, raw, reason, meter_id, line_number FROM ingest_rejects "
                            "WHERE raw = 'garbage 49'").fetchall() == [
            ("meters/m-9/readings", "garbage 49", "invalid_payload", "m-9", 1)]
        assert conn.execute("SELECT count(DISTINCT meter_id) FROM readings").fetchone()[0] == 10


def test_a_wrong_password_is_one_line_and_exit_status_1(ingest, mqtt_env):
    ingest.env["WATTWATCH_MQTT_PASSWORD"] = "wrong"
    ingest.runs += 1
    done = subprocess.run([sys.executable, "-m", "wattwatch.cli", "ingest", "mqtt", "--topic", "t",
                           "--metrics-port", "0"], env=ingest.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "refused the connection: Not authorized" in done.stderr
    assert "wrong" not in done.stderr and "Traceback" not in done.stderr


def test_mqtt5_messages_with_and_without_properties(ingest, durable, mqtt_env):
    # The client decodes a PUBLISH without properties itself and leaves the others to paho.
    ingest.start()
    sender = start(client_for(mqtt_env), mqtt_env)
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = ("gateway", "g-1")
    properties.MessageExpiryInterval = 3600
    sent = [sender.publish(*message(0), qos=1, properties=properties),
            sender.publish(*message(1), qos=1)]
    for info in sent:
        info.wait_for_publish(10)
    wait_for_counts(durable, (2, 0), ingest)
    summary = ingest.stop()
    sender.disconnect()
    sender.loop_stop()
    assert (summary["read"], summary["loaded"]) == (2, 2)
    with psycopg.connect(durable) as conn:
        assert conn.execute("SELECT meter_id, active_power_kw FROM readings ORDER BY 1").fetchall() == [
            ("m-0", 0.1), ("m-1", 0.2)]


@pytest.fixture
def tls_env(stack, mqtt_env) -> dict[str, str]:
    """The session's broker through its TLS listener, trusting the stack's throwaway CA."""
    return {**mqtt_env, "WATTWATCH_MQTT_URL": stack["mqtts_url"],
            "WATTWATCH_MQTT_CA_FILE": stack["mqtt_ca_file"]}


def test_mqtts_with_the_ca_file_loads_every_message(ingest, durable, tls_env):
    ingest.env.update(tls_env)
    ingest.start()
    publisher = Sender(tls_env)  # publishes through TLS as well
    publisher.publish(range(500))
    wait_for_counts(durable, expected(500), ingest)
    summary = ingest.stop()
    publisher.close()
    assert (summary["read"], summary["loaded"], summary["rejected"]) == (500, 490, 10)
    assert "connected to broker " + tls_env["WATTWATCH_MQTT_URL"] in ingest.log.read_text()


def test_mqtts_with_a_wrong_ca_is_one_line_and_exit_status_1(ingest, tls_env, tmp_path):
    other_ca, _ = make_ca(tmp_path, "other")  # a CA that did not sign the broker's certificate
    ingest.env.update(tls_env, WATTWATCH_MQTT_CA_FILE=str(other_ca))
    done = subprocess.run([sys.executable, "-m", "wattwatch.cli", "ingest", "mqtt", "--topic", "t",
                           "--metrics-port", "0"], env=ingest.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("wattwatch ingest:")]
    assert errors == [f"wattwatch ingest: the broker {tls_env['WATTWATCH_MQTT_URL']} presented a "
                      "certificate that does not verify (self-signed certificate in certificate "
                      "chain): set WATTWATCH_MQTT_CA_FILE to the CA that signed it"], done.stderr
    assert "Traceback" not in done.stderr
    ingest.env["WATTWATCH_MQTT_CA_FILE"] = str(tmp_path / "missing.crt")
    done = subprocess.run([sys.executable, "-m", "wattwatch.cli", "ingest", "mqtt", "--topic", "t",
                           "--metrics-port", "0"], env=ingest.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert f"WATTWATCH_MQTT_CA_FILE {tmp_path / 'missing.crt'}: cannot load CA" in done.stderr
    assert "Traceback" not in done.stderr
    # the simulator publishing to the broker gives up the same way, without waiting for ever
    ingest.env["WATTWATCH_MQTT_CA_FILE"] = str(other_ca)
    done = subprocess.run([sys.executable, "-m", "wattwatch.cli", "ingest", "simulate", "--mqtt",
                           tls_env["WATTWATCH_MQTT_URL"], "--meters", "2000", "--interval", "60",
                           "--history-days", "1", "--duration", "30"], env=ingest.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "presented a certificate that does not verify" in done.stderr
    assert "Traceback" not in done.stderr


def test_nothing_lost_across_kill_9_broker_restart_and_database_restarts(ingest, durable, stack,
                                                                          mqtt_env):
    ingest.start()
    publisher = Sender(mqtt_env)
    publishing = threading.Thread(target=publisher.publish, args=(range(0, 3000),))
    publishing.start()
    time.sleep(0.5)
    ingest.kill()  # kill -9 while messages arrive: those not acknowledged come again
    publishing.join()
    publisher.publish(range(3000, 4000))  # queued by the broker for the absent session
    ingest.start()
    wait_for_counts(durable, expected(4000), ingest)

    publisher.close()
    restart_broker(stack)  # the ingest reconnects with backoff and resumes its session
    ingest.wait_for_log(f"broker {mqtt_env['WATTWATCH_MQTT_URL']} back after")
    publisher = Sender(mqtt_env)
    publisher.publish(range(4000, 5000))
    wait_for_counts(durable, expected(5000), ingest)

    publishing = threading.Thread(target=publisher.publish, args=(range(5000, 7000),))
    publishing.start()
    restart_database(stack, "fast")
    restart_database(stack, "immediate")
    publishing.join()
    wait_for_counts(durable, expected(7000), ingest)
    ingest.wait_for_log("database back after")
    summary = ingest.stop()
    publisher.close()
    assert summary["loaded"] + summary["duplicates"] + summary["rejected"] == summary["read"]
    with psycopg.connect(durable) as conn:
        # Zero lost and zero twice: every published reading once, every garbage payload once.
        stored = conn.execute("SELECT meter_id, time, active_power_kw FROM readings").fetchall()
        assert len(stored) == len(set((m, t) for m, t, _ in stored)) == expected(7000)[0]
        raws = [r for (r,) in conn.execute("SELECT raw FROM ingest_rejects").fetchall()]
        assert sorted(raws) == sorted(f"garbage {i}" for i in range(7000) if i % 50 == 49)


def test_more_publishes_than_packet_ids_all_reach_the_broker(mqtt_env):
    # Past 65,535 messages queued at once every packet id is in use and paho refuses the next
    # message; the publisher's window keeps ids free.
    count = 70_000
    received: set[bytes] = set()
    subscribed = threading.Event()
    subscriber = client_for(mqtt_env)
    subscriber.on_connect = lambda client, *args: client.subscribe("window/#", 1)
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.on_message = lambda client, userdata, message: received.add(message.payload)
    start(subscriber, mqtt_env, subscribed)
    sender = client_for(mqtt_env)
    publisher = Publisher(sender)
    start(sender, mqtt_env)
    try:
        for i in range(count):
            publisher.publish("window/x", b"%d" % i)
        assert publisher.wait(60)
        deadline = time.monotonic() + 60
        while len(received) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(received) == count
    finally:
        for client in (sender, subscriber):
            client.disconnect()
            client.loop_stop()


def test_simulate_publishes_what_ingest_mqtt_stores(ingest, durable, mqtt_env):
    ingest.start()
    env = {**ingest.env, **mqtt_env}
    done = subprocess.run(
        [sys.executable, "-m", "wattwatch.cli", "ingest", "simulate", "--mqtt",
         mqtt_env["WATTWATCH_MQTT_URL"], "--meters", "3", "--interval", "60", "--history-days",
         "0.01", "--duration", "2", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)["published"]
    assert published >= 3 * 14  # 0.01 days of 60 s steps, at once, for each meter
    wait_for_counts(durable, (published, 0), ingest)
    with psycopg.connect(durable) as conn:
        meters = conn.execute("SELECT meter_id, count(*), count(active_power_kw) FROM readings "
                              "GROUP BY 1 ORDER BY 1").fetchall()
    assert [m for m, _, _ in meters] == ["sim-0000", "sim-0001", "sim-0002"]
    assert all(n == published // 3 and powers > 0 for _, n, powers in meters)
    with psycopg.connect(durable) as conn:  # the meters' names go to the database directly
        assert conn.execute("SELECT name FROM meters WHERE meter_id = 'sim-0002'").fetchone() == (
            "Simulated meter 2",)
    refused = subprocess.run(
        [sys.executable, "-m", "wattwatch.cli", "ingest", "simulate", "--mqtt",
         mqtt_env["WATTWATCH_MQTT_URL"], "--from", "2024-01-01", "--to", "2024-01-02"],
        env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--mqtt publishes live readings" in refused.stderr
