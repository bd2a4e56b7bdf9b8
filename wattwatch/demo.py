"""`wattwatch demo`: the compose stack as native processes, for machines without Docker.

TimescaleDB, Prometheus and Mosquitto come from wattwatch/stack.py (the test stack), installed
on first use; a fresh database gets the migrations and a labelled history of simulated meters,
with a model per meter trained on the first half; then the live simulator publishing through
the broker, the MQTT ingest, the detector, the drift service and the KPI exporter run as
processes, each as its own role, and Prometheus scrapes them. Grafana is started when a
grafana-server binary is installed; otherwise the demo says how to point one at
grafana/provisioning. Ctrl-C stops everything and removes the stack.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from wattwatch.errors import WattwatchError
from wattwatch.stack import free_port, shipped

STACK = [sys.executable, "-m", "wattwatch.stack"]
CACHE = Path(os.environ.get("WATTWATCH_CACHE_DIR", Path.home() / ".cache" / "wattwatch"))
DATABASE = "wattwatch_demo"
PREFIX, SEED = "demo", 42
ROLES = ("wattwatch_reader", "wattwatch_ingest", "wattwatch_jobs")


def seed_history(conn, settings, *, meters: int, days: float, end: datetime, prefix: str = PREFIX,
                 seed: int = SEED, anomaly_rate: float = 0.3, shift_days: float = 3.0) -> None:
    """`days` of labelled simulated history up to `end`, a model per meter trained on its first
    half (so the second half is scored as new data), and the demo's story on top (`conn` in
    autocommit)."""
    from detector.readings import meters as registered
    from detector.registry import train
    from ingest.simulate import simulate_history

    start = end - timedelta(days=days)
    simulate_history(conn, settings, meters=meters, step_seconds=60, seed=seed, start=start, end=end,
                     prefix=prefix, anomaly_rate=anomaly_rate)
    tell_story(conn, settings, prefix=prefix, end=end, shift_days=shift_days)
    for meter in registered(conn):
        with conn.transaction():
            train(conn, meter, settings, start=start, end=start + timedelta(days=days / 2),
                  reason="initial")


def tell_story(conn, settings, *, prefix: str, end: datetime, shift_days: float) -> None:
    """What the demo's dashboards show beyond the simulator's own anomalies, so that every panel
    has something to show minutes after the start: meter 1's supply voltage raised by 9 V for
    the last `shift_days` (data drift), a labelled surge on meter 2 six hours ago (an incident in
    the last day), and an export of meter 0 with three corrupt lines (rejects by reason)."""
    import tempfile

    from ingest.load import LoadOptions, load_file
    from ingest.synthetic import meter_id
    from timescale.rollups import refresh_rollups

    drifted, surging = meter_id(prefix, 1), meter_id(prefix, 2)
    shifted_from = end - timedelta(days=shift_days)
    surge = (end - timedelta(hours=6), end - timedelta(hours=5, minutes=31))
    with conn.transaction():
        conn.execute("UPDATE readings SET voltage_v = voltage_v + 9 WHERE meter_id = %s AND time >= %s",
                     (drifted, shifted_from))
        surged = conn.execute(
            "UPDATE readings SET active_power_kw = active_power_kw + 6, current_a = current_a + 26"
            " WHERE meter_id = %s AND time BETWEEN %s AND %s", (surging, *surge)).rowcount
        if surged:
            conn.execute("INSERT INTO injected_anomalies (meter_id, start_time, end_time, kind, magnitude,"
                         " source) VALUES (%s, %s, %s, 'spike', 6, 'demo')", (surging, *surge))
    refresh_rollups(conn, min(shifted_from, surge[0]), end)
    with tempfile.TemporaryDirectory() as directory:
        export = Path(directory) / f"{meter_id(prefix, 0)}-export.csv"
        export.write_text("time,active_power_kw,voltage_v\n"
                          f"{(end - timedelta(hours=1)).isoformat()},ERR,231.0\n"
                          f"{(end - timedelta(minutes=59)).isoformat()},0.8,9999\n"
                          "yesterday noon,0.7,230.5\n")
        load_file(conn, export, LoadOptions(meter=meter_id(prefix, 0)), settings)


def stack_command(args: list[str], failure: str) -> str:
    """Run a wattwatch.stack action; its stdout, or its last stderr line as the error."""
    done = subprocess.run([*STACK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise WattwatchError(f"{failure}: {last}")
    return done.stdout


class Demo:
    def __init__(self, state: Path, meters: int, days: int):
        self.state, self.meters, self.days = state, meters, days
        self.processes: dict[str, subprocess.Popen] = {}
        self.stack: dict | None = None

    def start(self) -> dict[str, str]:
        stack_command(["install"], "TimescaleDB, Prometheus and Mosquitto could not be installed")
        self.stack = json.loads(stack_command(["up", "--state", str(self.state)],
                                              "the native stack did not start"))
        urls = self._database()
        self._services(urls)
        links = {"Prometheus": self.stack["prometheus_url"]}
        links.update(self._grafana(urls["wattwatch_reader"]))
        return links

    def _database(self) -> dict[str, str]:
        """A fresh demo database, migrated, seeded; the URL of each role (random passwords)."""
        import psycopg
        from psycopg import sql

        from timescale.connect import connect_url, with_database
        from timescale.migrate import migrate
        from wattwatch.settings import Settings

        admin = self.stack["database_url"]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        owner = with_database(admin, DATABASE)
        passwords = {role: secrets.token_hex(12) for role in ROLES}
        settings = Settings(_env_file=None, database_url=owner, detector_train_days=self.days / 2,
                            **{f"{role.removeprefix('wattwatch_')}_password": pw for role, pw in passwords.items()})
        print(f"demo: loading {self.days} days of {self.meters} simulated meters and training their models",
              flush=True)
        with connect_url(owner, autocommit=True) as conn:
            migrate(conn, settings)
            seed_history(conn, settings, meters=self.meters, days=self.days,
                         end=datetime.now(timezone.utc).replace(second=0, microsecond=0))
        return {role: with_database(admin, DATABASE, role, pw) for role, pw in passwords.items()}

    def _services(self, urls: dict[str, str]) -> None:
        """The live simulator publishing through the broker, the MQTT ingest, detector, drift
        service and exporter, scraped by Prometheus."""
        from wattwatch.metrics import DEFAULT_PORTS

        broker = self.stack["mqtt_url"]
        commands = {
            "ingest": ("wattwatch_ingest", ["ingest", "mqtt", "--broker", broker, "--topic",
                                            "meters/+/readings", "--meter-from-topic", "2"]),
            "detector": ("wattwatch_jobs", ["detect", "run"]),
            "drift": ("wattwatch_jobs", ["drift", "run"]),
            "exporter": ("wattwatch_reader", ["export"]),
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
        self.logs = self.state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        targets = Path(self.stack["prometheus_targets"])
        self.env = {**clean, "WATTWATCH_DETECTOR_TRAIN_DAYS": str(self.days / 2),
                    "WATTWATCH_DRIFT_CURRENT_DAYS": str(min(7, self.days / 2)),
                    "WATTWATCH_MQTT_USERNAME": self.stack["mqtt_username"],
                    "WATTWATCH_MQTT_PASSWORD": self.stack["mqtt_password"]}
        for job, (role, args) in commands.items():
            port = free_port()
            self._spawn(job, urls[role], [*args, "--metrics-port", str(port)])
            (targets / f"{job}.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))
            print(f"demo: {job} running as {role}, metrics on port {port} (default {DEFAULT_PORTS[job]}), "
                  f"log {self.logs / (job + '.log')}", flush=True)
        # The broker keeps messages only for a session that exists: publish once subscribed.
        deadline = time.monotonic() + 60
        while "subscribed to" not in (self.logs / "ingest.log").read_text():
            if time.monotonic() > deadline or self.processes["ingest"].poll() is not None:
                raise WattwatchError(f"the MQTT ingest did not subscribe; see {self.logs / 'ingest.log'}")
            time.sleep(0.2)
        self._spawn("simulator", urls["wattwatch_ingest"],
                    ["ingest", "simulate", "--mqtt", broker, "--meters", str(self.meters),
                     "--seed", str(SEED), "--prefix", PREFIX])
        print(f"demo: simulator publishing to {broker} as wattwatch_ingest, "
              f"log {self.logs / 'simulator.log'}", flush=True)

    def _spawn(self, job: str, database_url: str, args: list[str]) -> None:
        with (self.logs / f"{job}.log").open("w") as log:
            self.processes[job] = subprocess.Popen(
                [sys.executable, "-m", "wattwatch.cli", *args],
                env={**self.env, "WATTWATCH_DATABASE_URL": database_url}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def _grafana_env(self, reader_url: str) -> dict[str, str]:
        import psycopg

        params = psycopg.conninfo.conninfo_to_dict(reader_url)
        return {"WATTWATCH_GRAFANA_DATABASE_ADDRESS": f"{params['host']}:{params['port']}",
                "WATTWATCH_GRAFANA_DATABASE_NAME": DATABASE,
                "WATTWATCH_GRAFANA_PROMETHEUS_URL": self.stack["prometheus_url"],
                "WATTWATCH_GRAFANA_DASHBOARDS_DIR": str(shipped("grafana") / "dashboards"),
                "WATTWATCH_READER_PASSWORD": params["password"],
                "WATTWATCH_ALERT_WEBHOOK_URL": os.environ.get("WATTWATCH_ALERT_WEBHOOK_URL",
                                                              "http://127.0.0.1:9/alerts")}

    def _grafana(self, reader_url: str) -> dict[str, str]:
        """Start Grafana where it is installed; otherwise say how to run one against the demo."""
        env = self._grafana_env(reader_url)
        provisioning = shipped("grafana") / "provisioning"
        binary = shutil.which("grafana-server") or shutil.which("grafana")
        if binary is None:
            exports = " ".join(f"{k}={v}" for k, v in env.items())
            print("demo: Grafana is not installed here, so it is not started. To see the dashboards, "
                  f"run a Grafana 11 with GF_PATHS_PROVISIONING={provisioning} and {exports}",
                  flush=True)
            return {}
        port = free_port()
        home = next((p for p in (Path("/usr/share/grafana"), Path(binary).resolve().parent.parent)
                     if (p / "conf" / "defaults.ini").exists()), None)
        if home is None:
            print(f"demo: {binary} found but not its home (conf/defaults.ini); Grafana not started", flush=True)
            return {}
        data = self.state / "grafana"
        env.update({"GF_PATHS_PROVISIONING": str(provisioning), "GF_PATHS_DATA": str(data),
                    "GF_PATHS_LOGS": str(data / "logs"), "GF_SERVER_HTTP_ADDR": "127.0.0.1",
                    "GF_SERVER_HTTP_PORT": str(port), "GF_AUTH_ANONYMOUS_ENABLED": "true",
                    "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
                    "GF_SECURITY_ADMIN_PASSWORD": os.environ.get("GRAFANA_ADMIN_PASSWORD", secrets.token_hex(8))})
        args = [binary, "server"] if Path(binary).name == "grafana" else [binary]
        with (self.state / "logs" / "grafana.log").open("w") as log:
            self.processes["grafana"] = subprocess.Popen([*args, "--homepath", str(home)],
                                                         env={**os.environ, **env}, stdout=log,
                                                         stderr=subprocess.STDOUT, start_new_session=True)
        return {"Grafana": f"http://127.0.0.1:{port}"}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.stack is not None:
            subprocess.run([*STACK, "down", "--state", str(self.state)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def failed(self) -> str | None:
        """The name of a service that exited on its own, if any."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return None


def cmd_demo(args: argparse.Namespace) -> None:
    demo = Demo(args.state.resolve(), args.meters, args.days)
    try:
        links = demo.start()
        shown = ", ".join(f"{name} {url}" for name, url in links.items())
        print(f"demo: ready: {shown}. Ctrl-C stops everything.", flush=True)
        while (failed := demo.failed()) is None:
            time.sleep(1)
        raise WattwatchError(f"the {failed} service stopped; see {demo.state / 'logs' / failed}.log")
    except KeyboardInterrupt:
        print("demo: stopping", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        demo.stop()
    print("demo: stopped", flush=True)


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="run the whole stack natively with demo data",
        description="The compose stack as native processes, for machines without Docker: "
        "TimescaleDB, Prometheus and Mosquitto (installed with apt-get on first use), a labelled "
        "history of simulated meters, the live simulator publishing through the broker, the MQTT "
        "ingest, detector, drift service and KPI exporter, and "
        "Grafana when it is installed. Prints the URLs; Ctrl-C stops everything and removes the "
        "stack. Runs as root.")
    demo.add_argument("--meters", type=int, default=5, help="simulated meters (default 5)")
    demo.add_argument("--days", type=int, default=14,
                      help="days of history loaded first; models train on the first half (default 14)")
    demo.add_argument("--state", type=Path, default=CACHE / "stacks" / "demo",
                      help="directory for the stack's state and the services' logs")
    demo.set_defaults(func=cmd_demo)
