"""Grafana's file-provisioned alerting: rule chains (refIds, condition, reduce and threshold
inputs), labels and summaries, the contact point and policy; each SQL rule expanded as Grafana
would and run as the read-only role on rows made to fire it and rows that must not. The
Prometheus rules are evaluated against the running services in test_grafana_dashboards.py."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml

from tests.grafana_macros import expand
from tests.grafana_stack import ALERT_RULES, ALERTING, NUMERIC_TYPES, UIDS, alert_query, firing
from tests.test_compose import env_example

RULES = {rule["title"]: rule for rule in ALERT_RULES}
CONTACT_POINTS = yaml.safe_load((ALERTING / "contact-points.yaml").read_text())["contactPoints"]
POLICIES = yaml.safe_load((ALERTING / "policies.yaml").read_text())["policies"]


def test_the_issue_rules_exist_with_unique_uids():
    assert set(RULES) == {"Critical anomaly incident", "Anomaly rate above normal", "Critical drift",
                          "Ingest stalled", "Job down"}
    assert len({rule["uid"] for rule in ALERT_RULES}) == len(ALERT_RULES)


@pytest.mark.parametrize("title", sorted(RULES))
def test_rule_chain_is_consistent(title):
    rule = RULES[title]
    steps = {step["refId"]: step for step in rule["data"]}
    assert len(steps) == len(rule["data"]), "duplicate refIds"
    for ref, step in steps.items():
        assert step["model"]["refId"] == ref
        if step["datasourceUid"] == "__expr__":
            assert step["model"]["expression"] in steps, f"{ref} reads an unknown refId"
            assert list(steps).index(step["model"]["expression"]) < list(steps).index(ref)
        else:
            assert step["datasourceUid"] in UIDS
            assert step["model"]["datasource"]["uid"] == step["datasourceUid"]
            assert step["relativeTimeRange"]["from"] > step["relativeTimeRange"]["to"] == 0
    condition = steps[rule["condition"]]["model"]
    assert condition["type"] == "threshold"
    reduce = steps[condition["expression"]]["model"]
    assert reduce["type"] == "reduce" and steps[reduce["expression"]]["datasourceUid"] != "__expr__"
    used = {rule["condition"]} | {s["model"]["expression"] for s in steps.values() if "expression" in s["model"]}
    assert used == set(steps), f"steps nobody reads: {set(steps) - used}"


@pytest.mark.parametrize("title", sorted(RULES))
def test_rule_has_a_severity_and_a_summary_naming_what_fails(title):
    rule = RULES[title]
    assert rule["labels"]["severity"] in ("warning", "critical")
    summary = rule["annotations"]["summary"]
    labels = set(re.findall(r"\$labels\.(\w+)", summary))
    assert labels & {"meter", "meter_id", "job"}, f"{title}: summary names no meter: {summary}"
    query = alert_query(rule)
    if query["datasourceUid"] == "timescaledb":  # labels come from the query's text columns
        for label in labels:
            assert re.search(rf"\bAS {label}\b|\b{label}\b,", query["model"]["rawSql"]), label
    else:
        expr = query["model"]["expr"]
        for label in labels:
            assert f"by ({label})" in expr or label in ("job", "instance"), label


# What each rule means decides its severity: critical is for what needs someone now (a critical
# incident or drift, a silent meter, a stopped job); the policy routes only critical sooner.
SEVERITIES = {"Critical anomaly incident": "critical", "Anomaly rate above normal": "warning",
              "Critical drift": "critical", "Ingest stalled": "critical", "Job down": "critical"}
MATCHERS = {"=": lambda got, want: got == want, "!=": lambda got, want: got != want,
            "=~": lambda got, want: re.fullmatch(want, got) is not None,
            "!~": lambda got, want: re.fullmatch(want, got) is None}


def routes_for(labels: dict) -> list[dict]:
    """The policy's child routes whose object_matchers all hold for a rule's labels."""
    (policy,) = POLICIES
    return [route for route in policy.get("routes", [])
            if all(MATCHERS[op](labels.get(name, ""), value) for name, op, value in route["object_matchers"])]


@pytest.mark.parametrize("title", sorted(RULES))
def test_severity_matches_the_rule_and_critical_ones_take_the_critical_route(title):
    severity = RULES[title]["labels"]["severity"]
    assert severity == SEVERITIES[title]
    if title.startswith("Critical"):
        assert severity == "critical", f"{title} is labelled {severity}"
    critical_routes = [route for route in routes_for(RULES[title]["labels"])
                       if ["severity", "=", "critical"] in route["object_matchers"]]
    assert bool(critical_routes) == (severity == "critical")


def test_contact_point_and_policy():
    (point,) = CONTACT_POINTS
    (receiver,) = point["receivers"]
    assert receiver["type"] == "webhook"
    variable = re.fullmatch(r"\$\{(\w+)\}", receiver["settings"]["url"])[1]
    assert variable in env_example(), f"{variable} is not documented in .env.example"
    (policy,) = POLICIES
    names = {p["name"] for p in CONTACT_POINTS}
    assert policy["receiver"] in names
    assert all(route["receiver"] in names for route in policy.get("routes", []))
    assert {"alertname", "meter", "meter_id"} <= set(policy["group_by"])


@pytest.fixture(scope="module")
def reader(db_url, role_url):
    """Three meters: m-surge has a fresh critical incident and a burst of anomalies in the last
    hour over a quiet week; m-steady has its usual rate; m-old had a critical incident a day ago."""
    now = datetime.now(timezone.utc)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for meter in ("m-surge", "m-steady", "m-old"):
            conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (meter,))
        version = conn.execute("INSERT INTO models (algorithm, reason) VALUES ('test', 'initial') "
                               "RETURNING version").fetchone()[0]
        incidents = [("m-surge", now - timedelta(minutes=3), "critical", "spike"),
                     ("m-steady", now - timedelta(minutes=3), "high", "spike"),
                     ("m-old", now - timedelta(days=1), "critical", "outage")]
        for meter, start, severity, kind in incidents:
            conn.execute("INSERT INTO anomaly_incidents (meter_id, model_version, start_time, end_time, "
                         "n_readings, peak_score, severity, kind) VALUES (%s, %s, %s, %s, 3, 99, %s, %s)",
                         (meter, version, start, start + timedelta(minutes=2), severity, kind))
        # m-steady: 10 anomalies every day of the week and 1 in the last hour; m-surge: 1 a day,
        # then 30 in the last hour.
        times = {"m-steady": [now - timedelta(hours=2 + 2.4 * i) for i in range(70)] + [now - timedelta(minutes=5)],
                 "m-surge": [now - timedelta(days=1 + i) for i in range(6)]
                 + [now - timedelta(minutes=i + 1) for i in range(30)]}
        with conn.cursor().copy("COPY anomaly_scores (time, meter_id, model_version, score, is_anomaly, "
                                "severity) FROM STDIN") as copy:
            for meter, stamps in times.items():
                for stamp in stamps:
                    copy.write_row((stamp, meter, version, 90, True, "high"))
    with psycopg.connect(role_url("wattwatch_reader"), autocommit=True) as conn:
        yield conn


def sql_series(rule: dict, reader) -> list[tuple[dict, float]]:
    """Run a SQL rule's query as Grafana's alerting would (its relative range ending now) and
    turn the rows into series: text columns are labels, the one numeric column the value."""
    query = alert_query(rule)
    now = datetime.now(timezone.utc)
    start = now - timedelta(seconds=query["relativeTimeRange"]["from"])
    with reader.cursor() as cursor:
        cursor.execute(expand(query["model"]["rawSql"], start, now, timedelta(seconds=60)))
        columns = cursor.description
        values = [i for i, c in enumerate(columns) if c.type_code in NUMERIC_TYPES]
        assert len(values) == 1, f"{rule['title']}: one value column needed, got {[c.name for c in columns]}"
        return [({c.name: row[i] for i, c in enumerate(columns) if i not in values}, row[values[0]])
                for row in cursor.fetchall()]


def test_critical_incident_fires_for_the_meter_with_a_fresh_critical_incident_only(reader):
    fired = firing(RULES["Critical anomaly incident"], sql_series(RULES["Critical anomaly incident"], reader))
    assert fired == [{"meter": "m-surge", "kind": "spike"}]


def test_anomaly_rate_fires_for_the_burst_not_for_the_usual_rate(reader):
    rule = RULES["Anomaly rate above normal"]
    series = dict((labels["meter"], value) for labels, value in sql_series(rule, reader))
    assert series["m-steady"] == pytest.approx(1 / 1.0)        # 1 in the hour, floor of 1 an hour
    assert series["m-surge"] == pytest.approx(30 / 1.0)
    assert firing(rule, list(sql_series(rule, reader))) == [{"meter": "m-surge"}]


def test_prometheus_rules_pass_promtool_check_and_their_unit_tests():
    prometheus = ALERTING.parents[2] / "prometheus"
    checked = subprocess.run(["promtool", "check", "rules", str(prometheus / "rules" / "wattwatch.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", str(prometheus / "rules.test.yml")],
                            capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    config = yaml.safe_load((prometheus / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    for group in yaml.safe_load((prometheus / "rules" / "wattwatch.yml").read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
