"""The provisioned dashboards proven the way Grafana would use them: every file parses, every
data source uid exists, and every panel, variable and annotation query, expanded with Grafana's
macros over several ranges and intervals, runs as the read-only role against simulated data and
returns the shape its panel needs. Every PromQL expression is evaluated against the real
Prometheus scraping the real services."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml

from tests.conftest import prometheus_wait
from tests.grafana_catalog import PANEL_TYPES, UNITS
from tests.grafana_macros import expand, parse_interval
from tests.grafana_stack import (
    ALERT_RULES, ALERTING, BUILTIN_UIDS, DASHBOARDS, DRIFTED_METER, GRAFANA, NUMERIC_TYPES, PREFIX, UIDS,
    firing, promql_for_prometheus, promql_queries, running_services, scrape_all, seed,
    sql_queries, variables,
)

TIMESTAMPTZ, TEXT = 1184, 25
# (range, interval) pairs: Grafana's interval is about range / panel width, floored by the
# panel's minimum interval.
RANGES = [(timedelta(hours=1), timedelta(seconds=5)), (timedelta(hours=6), timedelta(seconds=30)),
          (timedelta(days=1), timedelta(minutes=1)), (timedelta(days=1), timedelta(hours=1)),
          (timedelta(days=7), timedelta(minutes=10)), (timedelta(days=30), timedelta(hours=1)),
          (timedelta(days=30), timedelta(hours=6)), (timedelta(days=4 * 365), timedelta(days=1))]
SQL_QUERIES = sql_queries()
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "wattwatch.yaml").read_text())["providers"]
PROMQL_QUERIES = promql_queries()
# Columns the tables' field overrides and readers rely on.
TABLE_COLUMNS = {
    "Incidents A": ["start", "end", "meter", "severity", "kind", "peak score", "readings",
                    "top feature", "excess kWh", "cost", "currency"],
    "Current load per meter A": ["meter", "load kW", "hour"],
    "Detection against injected anomalies A": ["injected kind", "injected", "detected"],
    "Current status per meter and feature A": ["meter", "feature", "status", "psi", "KS", "Wasserstein",
                                               "current n", "run at", "recommendation"],
    "Last run A": ["run at", "mode", "meters", "critical", "alert", "warning"],
    "Detector progress A": ["meter", "scored up to", "updated", "age s"],
}


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_data_sources_have_fixed_uids_and_the_read_only_role():
    assert set(UIDS) == {"timescaledb", "prometheus"}
    timescale = UIDS["timescaledb"]
    assert timescale["type"] == "grafana-postgresql-datasource"
    assert timescale["user"] == "wattwatch_reader"
    assert timescale["jsonData"]["timescaledb"] is True
    assert "password" in timescale["secureJsonData"]
    assert UIDS["prometheus"]["type"] == "prometheus"


def test_dashboard_provider_loads_every_dashboard_file():
    (only,) = PROVIDERS
    assert only["type"] == "file" and only["allowUiUpdates"] is False
    assert set(DASHBOARDS) == {"energy-overview", "anomalies", "drift", "pipeline-health"}


def test_alert_rules_and_dashboards_land_in_one_folder():
    """Grafana 11.5 provisions alert rules before dashboards. A rule group names its folder by
    title only (its keys: orgId, name, folder, interval, rules) and one is made with a random uid;
    a provider with a folderUid looks that uid up, finds nothing and makes a second folder of the
    same title. Without one, the provider finds the rules' folder by title."""
    (provider,) = PROVIDERS
    groups = yaml.safe_load((ALERTING / "rules.yaml").read_text())["groups"]
    assert "folderUid" not in provider
    for group in groups:
        assert set(group) <= {"orgId", "name", "folder", "interval", "rules"}, f"{group['name']}: {set(group)}"
        assert (group["orgId"], group["folder"]) == (provider["orgId"], provider["folder"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_types_and_units_are_grafanas(name):
    board = DASHBOARDS[name]
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, f"{name}: {panel['title']} has unknown type {panel['type']}"
    # A unit is a field config's "unit" or an override's {"id": "unit", "value": ...}.
    units = {node["unit"] for node in walk(board) if "unit" in node}
    units |= {node["value"] for node in walk(board) if node.get("id") == "unit"}
    assert units, f"{name}: no unit at all"
    assert units <= UNITS, f"{name}: units Grafana 11.5 does not know: {units - UNITS}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name):
    board = DASHBOARDS[name]
    assert board["uid"] == f"wattwatch-{name.split('-')[0]}"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
    for panel in board["panels"]:
        assert panel["targets"], f"{name}: {panel['title']} has no query"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']} is wider than the grid"
        assert [t["refId"] for t in panel["targets"]] == sorted({t["refId"] for t in panel["targets"]})
    for node in walk(board):
        source = node.get("datasource")
        if isinstance(source, dict):
            assert source["uid"] in UIDS or source["uid"] in BUILTIN_UIDS, f"{name}: unknown uid {source}"
            if source["uid"] in UIDS:
                assert source["type"] == UIDS[source["uid"]]["type"], f"{name}: {source}"


def test_dashboard_uids_are_unique_and_the_issue_panels_exist():
    assert len({b["uid"] for b in DASHBOARDS.values()}) == len(DASHBOARDS)
    titles = {name: {p["title"] for p in b["panels"]} for name, b in DASHBOARDS.items()}
    assert {"Active power", "Voltage and the EN 50160 band", "Current", "Sub-meter breakdown"} <= titles["energy-overview"]
    assert {"Incidents", "Anomalous readings by kind", "Elevated scores", "Top meters",
            "Detection against injected anomalies"} <= titles["anomalies"]
    assert {"PSI per feature", "KS statistic per feature", "Normalised Wasserstein per feature",
            "Current status per meter and feature", "Last run"} <= titles["drift"]
    assert {"Ingest rate", "Rejects by reason", "Scoring lag", "Batch durations (95th percentile)",
            "Jobs up", "Exporter scrape time", "MQTT messages", "MQTT broker lag"} <= titles["pipeline-health"]
    incidents = DASHBOARDS["energy-overview"]["annotations"]["list"][1]
    assert incidents["iconColor"] == "red" and incidents["datasource"]["uid"] == "timescaledb"


def test_macro_expansion_follows_grafana():
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    end = start + timedelta(hours=6)
    text = ("SELECT $__timeGroupAlias(time, $__interval), $__time(t) FROM x WHERE $__timeFilter(time) "
            "AND meter_id IN ($meter) AND m = '$one' AND s < $__interval_ms AND $__unixEpochFilter(e) "
            "AND $__timeFrom() < $__timeTo() AND $__unixEpochFrom() < $__unixEpochTo()")
    got = expand(text, start, end, timedelta(minutes=5), {"meter": ["a", "b'c"], "one": "x'y"})
    assert got == (
        "SELECT time_bucket('300.000s',time) AS \"time\", t AS \"time\" FROM x WHERE time BETWEEN "
        "'2024-01-01T00:00:00Z' AND '2024-01-01T06:00:00Z' AND meter_id IN ('a','b''c') AND m = 'x''y' "
        "AND s < 300000 AND e >= 1704067200 AND e <= 1704088800 AND '2024-01-01T00:00:00Z' < "
        "'2024-01-01T06:00:00Z' AND 1704067200 < 1704088800")
    assert expand("$__timeGroup(c, '1h')", start, end, timedelta(seconds=90), timescaledb=False) == \
        "floor(extract(epoch from c)/3600)*3600"
    assert expand("$__interval", start, end, timedelta(seconds=90)) == "1m"  # floored, as Grafana does
    with pytest.raises(ValueError, match="unknown Grafana macro"):
        expand("$__timeGroupFoo(c)", start, end, timedelta(minutes=1))
    with pytest.raises(KeyError, match="undefined template variable"):
        expand("$nope", start, end, timedelta(minutes=1))


# Names as people give them: two meters called alike (each site's "Main feed"), one unnamed.
METER_NAMES = {f"{PREFIX}-0000": "Main feed", f"{PREFIX}-0001": "Main feed", f"{PREFIX}-0002": None}


@pytest.fixture(scope="module")
def data(db_url):
    end = seed(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for meter, name in METER_NAMES.items():
            conn.execute("UPDATE meters SET name = %s WHERE meter_id = %s", (name, meter))
    return end


@pytest.fixture(scope="module")
def reader(data, role_url):
    with psycopg.connect(role_url("wattwatch_reader"), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '20s'")
        yield conn


def default_range(board: dict) -> timedelta:
    return parse_interval(board["time"]["from"].removeprefix("now-"))


def check_shape(query, cursor, rows) -> None:
    columns = [(c.name, c.type_code) for c in cursor.description]
    names = [name for name, _ in columns]
    if query.role in ("time_series", "heatmap"):
        assert columns[0] == ("time", TIMESTAMPTZ), f"{query}: a time series needs a timestamptz 'time' first, got {columns}"
        text = [name for name, kind in columns[1:] if kind == TEXT]
        assert text in ([], ["metric"]), f"{query}: only a 'metric' column may be text, got {columns}"
        assert any(kind in NUMERIC_TYPES for _, kind in columns[1:]), f"{query}: no value column in {columns}"
        times = [row[0] for row in rows]
        assert times == sorted(times), f"{query}: rows are not in time order"
    elif query.role == "annotation":
        assert ("time", TIMESTAMPTZ) in columns and ("text", TEXT) in columns, f"{query}: {columns}"
        assert set(names) <= {"time", "timeend", "text", "tags"}, f"{query}: {columns}"
    elif query.role == "variable":
        assert names[0] == "__value" and "__text" in names, f"{query}: {columns}"
    else:
        expected = TABLE_COLUMNS.get(query.where)
        if expected:
            assert names == expected, f"{query}: columns {names}, expected {expected}"
        else:  # a stat or bar gauge: numbers to show
            assert any(kind in NUMERIC_TYPES for _, kind in columns), f"{query}: no number in {columns}"


@pytest.mark.parametrize("query", SQL_QUERIES, ids=str)
def test_sql_query_runs_as_the_reader_with_its_panels_shape(query, reader, data):
    board = DASHBOARDS[query.dashboard]
    values = variables(board, reader)
    now = datetime.now(timezone.utc)
    default = default_range(board)
    cases = RANGES + [(default, max(default / 1000, timedelta(seconds=1)))]
    for span, interval in cases:
        interval = max(interval, query.interval or interval)
        text = expand(query.text, now - span, now, interval, values)
        with reader.cursor() as cursor:
            cursor.execute(text)
            rows = cursor.fetchall()
            check_shape(query, cursor, rows)
        if span == default:
            assert rows, f"{query}: no rows over the dashboard's default range {default}:\n{text}"


def test_the_meter_variable_lists_the_simulated_meters(reader):
    assert variables(DASHBOARDS["energy-overview"], reader)["meter"] == [f"{PREFIX}-000{i}" for i in range(3)]


def grafana_options(rows: list[tuple[str, str]]) -> list[str]:
    """The values a SQL query variable offers for (__value, __text) rows: Grafana keeps the first
    row of each text (uniqBy(values, 'text') in the PostgreSQL data source's responseParser.ts),
    so a meter whose text repeats is in neither the list nor "All"."""
    texts, values = set(), []
    for value, text in rows:
        if text not in texts:
            texts.add(text)
            values.append(value)
    return values


METER_VARIABLES = [(name, variable) for name, board in DASHBOARDS.items()
                   for variable in board["templating"]["list"] if variable["name"] == "meter"]


@pytest.mark.parametrize("name, variable", METER_VARIABLES, ids=[name for name, _ in METER_VARIABLES])
def test_the_meter_variable_offers_every_meter_whatever_its_name(name, variable, reader):
    assert variable["definition"] == variable["query"]
    rows = reader.execute(variable["query"]).fetchall()
    meters = [row[0] for row in reader.execute("SELECT meter_id FROM meters ORDER BY meter_id")]
    assert grafana_options(rows) == meters
    assert rows == [(f"{PREFIX}-0000", f"Main feed ({PREFIX}-0000)"),
                    (f"{PREFIX}-0001", f"Main feed ({PREFIX}-0001)"), (f"{PREFIX}-0002", f"{PREFIX}-0002")]
    # The same query over made-up rows (a WITH named meters hides the table): a name that is
    # empty or the id itself shows the id alone.
    cases = reader.execute("WITH meters (meter_id, name) AS (VALUES ('a', 'a'), ('b', ''), ('c', NULL), "
                           "('d', 'Kitchen')) " + variable["query"]).fetchall()
    assert cases == [("a", "a"), ("b", "b"), ("c", "c"), ("d", "Kitchen (d)")]


def test_power_panel_reads_the_rollups_with_the_raw_averages(reader, db_url, data):
    """The same hour of power from raw readings (1 min buckets averaged) and from the hourly and
    daily rollups: the dashboard shows the same number whichever source the range picks."""
    (power,) = [q for q in SQL_QUERIES if q.where == "Active power A"]
    values = {"meter": [f"{PREFIX}-0002"]}
    start = data - timedelta(days=2)
    day = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    hourly = reader.execute(expand(power.text, day, day + timedelta(hours=23, minutes=59), timedelta(hours=1), values)).fetchall()
    daily = reader.execute(expand(power.text, day, day + timedelta(hours=23, minutes=59), timedelta(days=1), values)).fetchall()
    raw = reader.execute(expand(power.text, day, day + timedelta(hours=23, minutes=59), timedelta(minutes=1), values)).fetchall()
    assert len(raw) == 1440 and len(hourly) == 24 and len(daily) == 1

    def mean(rows) -> float:  # of the minutes with a reading: an injected outage has none
        present = [row[2] for row in rows if row[2] is not None]
        assert present
        return sum(present) / len(present)

    assert hourly[5][2] == pytest.approx(mean(raw[300:360]))
    assert daily[0][2] == pytest.approx(mean(raw))


def test_every_promql_expression_has_results_from_the_running_services_and_alerts_fire_right(data, reader, role_url, stack, scrape_target, mqtt_env):
    assert PROMQL_QUERIES
    with running_services(role_url, data, mqtt_env) as ports:
        scrape_all(stack, scrape_target, ports)
        results = {}
        for query in PROMQL_QUERIES:
            expr = promql_for_prometheus(query.text)
            results[query.where] = prometheus_wait(stack["prometheus_url"], expr, timeout=90)
            assert results[query.where], f"{query}: {expr} is empty"
    # The Prometheus alert rules' chains on those results: critical drift fires for the meter
    # whose voltage was shifted and for exactly the meters the drift reports call critical;
    # every job is up and every meter sends readings, so nothing else fires.
    rules = {rule["title"]: rule for rule in ALERT_RULES}
    def fired(title):
        series = [(r["metric"], float(r["value"][1])) for r in results[title]]
        return firing(rules[title], series)
    critical = [row[0] for row in reader.execute(
        "SELECT DISTINCT meter_id FROM drift_reports WHERE status = 'critical' ORDER BY 1")]
    assert DRIFTED_METER in critical
    assert sorted(labels["meter_id"] for labels in fired("Critical drift")) == critical
    assert fired("Job down") == []
    assert fired("Ingest stalled") == []
