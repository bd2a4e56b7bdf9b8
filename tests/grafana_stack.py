"""What the Grafana tests share: the provisioning files and dashboards, every query in them, a
database holding simulated data with anomalies, drift and rejects, and the real services
running as processes for Prometheus to scrape."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import yaml
from prometheus_client import CollectorRegistry

from detector.metrics import DetectorMetrics
from detector.service import run as detect
from drift.runner import run_pass
from wattwatch.demo import seed_history
from wattwatch.stack import free_port
from tests.conftest import settings_for
from tests.test_cli import WATTWATCH, run_cli

PROJECT = Path(__file__).resolve().parent.parent
GRAFANA = PROJECT / "grafana"
DASHBOARDS = {path.stem: json.loads(path.read_text()) for path in sorted((GRAFANA / "dashboards").glob("*.json"))}
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text())
UIDS = {source["uid"]: source for source in DATASOURCES["datasources"]}
BUILTIN_UIDS = {"-- Grafana --", "-- Mixed --", "-- Dashboard --"}
# PostgreSQL type oids of the columns Grafana reads as numbers: int8, int2, int4, float4, float8, numeric.
NUMERIC_TYPES = {20, 21, 23, 700, 701, 1700}
ALERTING = GRAFANA / "provisioning" / "alerting"
ALERT_RULES = [rule for group in yaml.safe_load((ALERTING / "rules.yaml").read_text())["groups"]
               for rule in group["rules"]]
THRESHOLDS = {"gt": lambda v, p: v > p[0], "lt": lambda v, p: v < p[0],
              "within_range": lambda v, p: p[0] < v < p[1], "outside_range": lambda v, p: v < p[0] or v > p[1]}

# Nine days: the drift reference (all but the last day) always holds weekend and weekday hours,
# whatever day the tests run (drift compares weekday and weekend hours apart; a five-day
# reference held no weekend on a Saturday, and the run judged too few readings).
PREFIX, SEED, METERS, DAYS = "sim", 5, 3, 9
DRIFTED_METER = "sim-0001"  # the meter whose voltage the demo story shifts
# What the services are told (small windows: the data holds nine days).
TRAIN_DAYS = 3
JOBS_ENV = {"WATTWATCH_DETECTOR_TRAIN_DAYS": str(TRAIN_DAYS), "WATTWATCH_DRIFT_MIN_VALUES": "100",
            "WATTWATCH_DRIFT_MIN_REFERENCE_DAYS": "2", "WATTWATCH_DRIFT_WORKERS": "1"}


@dataclass(frozen=True)
class Query:
    """One query of a dashboard: where it is, what it is for, its text."""
    dashboard: str
    where: str          # panel title, variable name or annotation name
    role: str           # time_series, table, annotation, variable, heatmap
    text: str
    interval: timedelta | None = None  # the panel's minimum interval

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


def _min_interval(panel: dict) -> timedelta | None:
    from tests.grafana_macros import parse_interval

    return parse_interval(panel["interval"]) if panel.get("interval") else None


def _uid(datasource: dict | None, panel: dict | None = None) -> str | None:
    source = datasource or (panel or {}).get("datasource") or {}
    return source.get("uid")


def sql_queries() -> list[Query]:
    found = []
    for name, board in DASHBOARDS.items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if _uid(target.get("datasource"), panel) == "timescaledb":
                    role = "heatmap" if panel["type"] == "heatmap" else target["format"]
                    found.append(Query(name, f"{panel['title']} {target['refId']}", role,
                                       target["rawSql"], _min_interval(panel)))
        for variable in board["templating"]["list"]:
            if variable["type"] == "query" and _uid(variable.get("datasource")) == "timescaledb":
                found.append(Query(name, f"${variable['name']}", "variable", variable["query"]))
        for annotation in board["annotations"]["list"]:
            if _uid(annotation.get("datasource")) == "timescaledb":
                found.append(Query(name, annotation["name"], "annotation", annotation["target"]["rawSql"]))
    return found


def promql_queries() -> list[Query]:
    """PromQL of every dashboard panel and of every Prometheus-based alert rule."""
    panels = [Query(name, f"{panel['title']} {target['refId']}", "promql", target["expr"])
              for name, board in DASHBOARDS.items() for panel in board["panels"]
              for target in panel.get("targets", [])
              if _uid(target.get("datasource"), panel) == "prometheus"]
    rules = [Query("alert rules", rule["title"], "alert", alert_query(rule)["model"]["expr"])
             for rule in ALERT_RULES if alert_query(rule)["datasourceUid"] == "prometheus"]
    return panels + rules


def alert_query(rule: dict) -> dict:
    """The data source query of a rule (refId A, the input of its reduce step)."""
    (query,) = [step for step in rule["data"] if step["datasourceUid"] != "__expr__"]
    return query


def firing(rule: dict, series: list[tuple[dict, float]]) -> list[dict]:
    """Labels of the series for which the rule's condition holds: its reduce (last value of an
    instant result: the value; dropNN drops NaN) then its threshold, as Grafana chains them."""
    steps = {step["refId"]: step["model"] for step in rule["data"]}
    threshold = steps[rule["condition"]]
    reduce = steps[threshold["expression"]]
    assert reduce["type"] == "reduce" and reduce["reducer"] == "last"
    evaluator = threshold["conditions"][0]["evaluator"]
    check = THRESHOLDS[evaluator["type"]]
    return [labels for labels, value in series
            if value == value and check(value, evaluator["params"])]


def variables(board: dict, reader) -> dict[str, list[str]]:
    """Every variable of a dashboard set to All, Grafana's default: a query variable's values are
    its query's __value column (run as `reader`), a custom one's its options."""
    values = {}
    for variable in board["templating"]["list"]:
        values[variable["name"]] = ([row[0] for row in reader.execute(variable["query"])]
                                    if variable["type"] == "query" else variable["query"].split(","))
    return values


def promql_for_prometheus(expr: str) -> str:
    """Grafana's Prometheus variables at a 15 s scrape interval, for an instant query."""
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")


def seed(db_url: str) -> datetime:
    """Nine days of three simulated meters with labelled anomalies up to now, with the demo's
    story (wattwatch/demo.py: a voltage shift on one meter in the last day, a labelled surge on
    another six hours ago, an export with corrupt lines), every reading scored by models trained
    on the first half, and a full drift run of the last day against the days before. Returns
    `end`, the time the simulated history stops."""
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    settings = settings_for(db_url, detector_train_days=TRAIN_DAYS, drift_min_values=100,
                            drift_min_reference_days=2, drift_workers=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed_history(conn, settings, meters=METERS, days=DAYS, end=end, prefix=PREFIX, seed=SEED,
                     anomaly_rate=0.6, shift_days=1)
        detect(conn, settings, DetectorMetrics(CollectorRegistry()), once=True)
        run_pass(conn, settings, mode="full", current_to=end, current_days=1,
                 reference=(end - timedelta(days=DAYS), end - timedelta(days=1)))
    return end


@contextlib.contextmanager
def running_services(role_url, end: datetime, mqtt_env: dict[str, str]) -> Iterator[dict[str, int]]:
    """ingest (`ingest mqtt`, fed by the live simulator through the broker), detector, drift and
    exporter as processes, each as its role, serving /metrics on free ports; yields job -> port
    and stops them all at the end."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    clean.update(mqtt_env)
    ports = {job: free_port() for job in ("ingest", "detector", "drift", "exporter")}
    window = ["--current-to", end.isoformat(), "--current-days", "1",
              "--reference-from", (end - timedelta(days=DAYS)).isoformat(),
              "--reference-to", (end - timedelta(days=1)).isoformat()]
    commands = {
        "ingest": ("wattwatch_ingest", ["ingest", "mqtt", "--topic", "meters/+/readings",
                                        "--meter-from-topic", "2", "--client-id",
                                        f"grafana-{os.getpid()}"]),
        "detector": ("wattwatch_jobs", ["detect", "run"]),
        "drift": ("wattwatch_jobs", ["drift", "run", "--mode", "full", *window]),
        "exporter": ("wattwatch_reader", ["export"]),
    }
    processes = []
    try:
        for job, (role, args) in commands.items():
            env = {**clean, **JOBS_ENV, "WATTWATCH_DATABASE_URL": role_url(role)}
            processes.append(subprocess.Popen([WATTWATCH, *args, "--metrics-port", str(ports[job])],
                                              env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True))
        env = {**clean, "WATTWATCH_DATABASE_URL": role_url("wattwatch_ingest")}
        processes.append(subprocess.Popen(
            [WATTWATCH, "ingest", "simulate", "--mqtt", mqtt_env["WATTWATCH_MQTT_URL"], "--meters",
             str(METERS), "--interval", "1", "--seed", str(SEED), "--prefix", PREFIX],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def scrape_all(stack: dict, scrape_target, ports: dict[str, int]) -> None:
    """Point Prometheus at every service at once, then wait for each to be up."""
    targets = Path(stack["prometheus_targets"])
    for job, port in ports.items():
        (targets / f"{job}.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))
    for job, port in ports.items():
        scrape_target(job, port)


def panel_rows(reader, prometheus_url: str, spans: list[timedelta]) -> dict[str, int]:
    """Rows each dashboard query returns now: every SQL query (panels, variables, annotations,
    with every variable at All) over each span as `reader`, and every PromQL expression of the
    panels and alert rules as an instant query. Keys: 'dashboard: where (span)' or 'dashboard: where'."""
    from tests.conftest import prometheus_query
    from tests.grafana_macros import expand

    counts = {}
    now = datetime.now(timezone.utc)
    for query in sql_queries():
        values = variables(DASHBOARDS[query.dashboard], reader)
        for span in spans:
            interval = max(span / 1000, query.interval or timedelta(seconds=1))
            rows = reader.execute(expand(query.text, now - span, now, interval, values)).fetchall()
            counts[f"{query} ({span.days or span.seconds // 3600}{'d' if span.days else 'h'})"] = len(rows)
    for query in promql_queries():
        counts[str(query)] = len(prometheus_query(prometheus_url, promql_for_prometheus(query.text)))
    return counts
