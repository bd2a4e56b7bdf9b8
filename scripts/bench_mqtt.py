#!/usr/bin/env python3
"""Benchmark: `wattwatch ingest mqtt` from the stack's Mosquitto into `readings`.

Starts a throwaway stack (scripts/stack.py: TimescaleDB, Mosquitto), a migrated scratch
database and one `wattwatch ingest mqtt` process. The bulk publisher (scripts/mqtt_flood.py)
runs in a process of its own.

1. throughput: --messages readings (one per message, QoS 1) published as fast as the broker
   takes them; messages/s from the first publish until the last row is in the hypertable
   (every message acknowledged by the broker, every row stored). Also the CPU each part spent
   per message (from /proc): what the two cores could carry without other work on them.
2. backlog: --messages more published while the ingest is stopped (the broker queues them for
   its session), then the ingest started: messages/s until the last row is stored, the
   ingest's own pace without a publisher competing for the cores.
3. latency: --meters meters, one message each per second for --seconds; each message's time is
   its publish time, so a row's ingested_at minus its time is publish-to-row (ingested_at is
   the start of the batch's transaction: the commit comes a few milliseconds later). p50/p95.
   This one publishes through paho (ingest/publisher.py), paced.

    .venv/bin/python scripts/bench_mqtt.py
    .venv/bin/python scripts/bench_mqtt.py --messages 100000 --meters 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from ingest.broker import Broker, connect_async, make_client  # noqa: E402
from ingest.publisher import Publisher  # noqa: E402
from mqtt_flood import publish_all  # noqa: E402
from timescale.connect import connect_url  # noqa: E402
from timescale.migrate import migrate  # noqa: E402
from tests.support.scratch import create_database  # noqa: E402
from wattwatch.settings import Settings  # noqa: E402


def publisher(settings: Settings, broker: Broker) -> Publisher:
    client = make_client(settings, broker, "")
    sender = Publisher(client)
    connect_async(client, broker)
    client.loop_start()
    while not client.is_connected():
        time.sleep(0.05)
    return sender


def wait_rows(url: str, count: int, timeout: float = 600) -> None:
    """Poll on one connection: a new one each time would cost the server a fork and a SCRAM
    exchange, on the cores being measured."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while (stored := conn.execute("SELECT count(*) FROM readings").fetchone()[0]) < count:
            if time.monotonic() > deadline:
                sys.exit(f"bench_mqtt: {stored} of {count} rows after {timeout} s")
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a live process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(postmaster: int) -> float:
    """CPU of the stack's PostgreSQL: the postmaster and its live children (backends, workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(stat.parent.name) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class CpuUse:
    """CPU seconds that the ingest, the broker and PostgreSQL spend between start and stop."""

    def __init__(self, ingest: int, stack: dict):
        data = Path(stack["postgres_log"]).parent if "postgres_log" in stack else None
        self.postmaster = int((data / "postmaster.pid").read_text().split()[0]) if data else None
        self.pids = {"ingest": ingest, "broker": stack["mosquitto_pid"]}
        self.started = self._now()

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.postmaster:
            now["PostgreSQL"] = postgres_cpu(self.postmaster)
        return now

    def since(self) -> dict[str, float]:
        return {name: seconds - self.started[name] for name, seconds in self._now().items()}


def start_ingest(env: dict, state: Path) -> subprocess.Popen:
    """`wattwatch ingest mqtt` under one client id (its session outlives it), once subscribed."""
    log = state / "ingest.log"
    before = log.read_text().count("connected to broker") if log.exists() else 0
    ingest = subprocess.Popen([sys.executable, "-m", "wattwatch.cli", "ingest", "mqtt",
                               "--topic", "bench/+/readings", "--meter-from-topic", "2",
                               "--client-id", "bench-ingest", "--metrics-port", "0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(log, "a"))
    while log.read_text().count("connected to broker") == before:
        if ingest.poll() is not None:
            sys.exit(f"bench_mqtt: the ingest exited; see {log}")
        time.sleep(0.05)
    return ingest


def stop_ingest(ingest: subprocess.Popen) -> None:
    ingest.send_signal(signal.SIGTERM)
    ingest.wait(60)


def readings(messages: int, offset: int = 0) -> list[tuple[str, bytes]]:
    """Messages offset.. offset+messages-1: 100 meters, one reading each per second of 2024."""
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [(f"bench/t-{i % 100}/readings",
             json.dumps({"time": (base + timedelta(seconds=i // 100)).isoformat(),
                         "active_power_kw": 1 + i % 7}).encode())
            for i in range(offset, offset + messages)]


def flood(broker: Broker, settings: Settings, batch: list[tuple[str, bytes]]) -> multiprocessing.Process:
    """Publish `batch` from another process (started here); it exits 0 once the broker has
    acknowledged every message."""
    context = multiprocessing.get_context("fork")
    cpu = context.Value("d", 0.0)

    def publish() -> None:
        publish_all(broker.host, broker.port, settings.mqtt_username,
                    settings.mqtt_password.get_secret_value(), batch)
        cpu.value = time.process_time()

    process = context.Process(target=publish)
    process.cpu = cpu  # its CPU seconds, once it is done
    process.start()
    return process


def published(process: multiprocessing.Process) -> float:
    """Wait for a flood to end; its CPU seconds."""
    process.join(600)
    if process.exitcode != 0:
        sys.exit(f"bench_mqtt: the publisher exited with {process.exitcode}")
    return process.cpu.value


def throughput(broker: Broker, settings: Settings, url: str, messages: int,
               cpu: CpuUse) -> tuple[float, dict[str, float]]:
    """Messages/s from the first publish to the last row stored, and the CPU seconds each part
    spent meanwhile."""
    batch = readings(messages)
    started = time.perf_counter()
    publisher = flood(broker, settings, batch)
    wait_rows(url, messages)
    seconds = time.perf_counter() - started
    spent = cpu.since()
    spent["publisher"] = published(publisher)
    return messages / seconds, spent


def latency(client: Publisher, url: str, meters: int, seconds: int, before: int) -> tuple[float, float]:
    start = time.time()
    for second in range(seconds):
        tick = start + second
        time.sleep(max(0.0, tick - time.time()))
        for meter in range(meters):  # spread over the second, as independent meters would be
            now = time.time()
            client.publish(f"bench/l-{meter}/readings", json.dumps(
                {"time": datetime.fromtimestamp(now, timezone.utc).isoformat(),
                 "active_power_kw": 1.0}).encode())
            time.sleep(max(0.0, tick + (meter + 1) / meters - time.time()))
    wait_rows(url, before + meters * seconds)
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM ingested_at - time)) FROM readings "
            "WHERE meter_id LIKE 'l-%'").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    stack = json.loads(subprocess.run([sys.executable, str(PROJECT / "scripts" / "stack.py"), "up",
                                       "--state", str(state)], check=True, capture_output=True,
                                      text=True).stdout)
    ingest = None
    try:
        url = create_database(stack["database_url"], "bench_mqtt")
        env = {**os.environ, "WATTWATCH_DATABASE_URL": url, "WATTWATCH_MQTT_URL": stack["mqtt_url"],
               "WATTWATCH_MQTT_USERNAME": stack["mqtt_username"],
               "WATTWATCH_MQTT_PASSWORD": stack["mqtt_password"]}
        settings = Settings(_env_file=None, **{k.removeprefix("WATTWATCH_").lower(): v
                                               for k, v in env.items() if k.startswith("WATTWATCH_")})
        with connect_url(url) as conn:
            migrate(conn, settings)
        ingest = start_ingest(env, state)
        broker = Broker.parse(stack["mqtt_url"])
        rate, spent = throughput(broker, settings, url, args.messages, CpuUse(ingest.pid, stack))
        print(f"throughput: {args.messages:,} messages in the hypertable at {rate:,.0f} messages/s "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        print("throughput: CPU per message " + ", ".join(
            f"{name} {seconds / args.messages * 1e6:.1f} us" for name, seconds in spent.items())
            + f"; all {sum(spent.values()) / args.messages * 1e6:.1f} us: 2 idle cores would take "
            f"{2 * args.messages / sum(spent.values()):,.0f} messages/s, the ingest's one core "
            f"(one interpreter) {args.messages / spent['ingest']:,.0f}", flush=True)
        stop_ingest(ingest)
        batch = readings(args.messages, offset=args.messages)
        started = time.perf_counter()
        published(flood(broker, settings, batch))
        print(f"backlog: {args.messages:,} messages queued by the broker in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        ingest = start_ingest(env, state)
        started = time.perf_counter()
        wait_rows(url, 2 * args.messages)
        rate = args.messages / (time.perf_counter() - started)
        print(f"backlog: drained into the hypertable at {rate:,.0f} messages/s (from the ingest's "
              "connection)", flush=True)
        client = publisher(settings, broker)
        p50, p95 = latency(client, url, args.meters, args.seconds, 2 * args.messages)
        print(f"latency at {args.meters:,} meters x 1 msg/s for {args.seconds} s: publish to row "
              f"p50 {p50:.3f} s, p95 {p95:.3f} s")
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*), count(DISTINCT (meter_id, time)) FROM readings").fetchone()
        expected = 2 * args.messages + args.meters * args.seconds
        print(f"stored: {stored[0]:,} rows, {stored[1]:,} distinct, of {expected:,} published")
        if stored != (expected, expected):
            sys.exit("bench_mqtt: rows lost or stored twice")
    finally:
        if ingest:
            stop_ingest(ingest)
        subprocess.run([sys.executable, str(PROJECT / "scripts" / "stack.py"), "down", "--state",
                        str(state)], check=False)


if __name__ == "__main__":
    main()
