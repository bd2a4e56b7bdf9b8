"""Replay and the simulator against the real TimescaleDB: pacing, determinism, labels of every
kind, and a database connection killed in the middle."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import psycopg

from ingest.simulate import simulate_history
from ingest.synthetic import BLOCK_STEPS, simulate_block
from tests.conftest import settings_for
from tests.test_cli import WATTWATCH, run_cli
from wattwatch.vocabulary import KINDS

UTC = timezone.utc


def cli_json(url: str, *args: str) -> dict:
    result = run_cli(["ingest", *args, "--json"], {"WATTWATCH_DATABASE_URL": url}, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["read"] == summary["loaded"] + summary["duplicates"] + summary["rejected"]
    return summary


def values(url: str, prefix: str) -> list[tuple]:
    """Each meter's readings of a prefix, meter ids reduced to their number."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT split_part(meter_id, '-', 2), time, active_power_kw, reactive_power_kw, voltage_v,"
            " current_a, sub_metering_1_wh, sub_metering_2_wh, sub_metering_3_wh FROM readings "
            "WHERE meter_id LIKE %s ORDER BY 1, 2", (prefix + "-%",)).fetchall()


def test_a_block_without_room_for_its_anomaly_has_none():
    """Seed 42, meter 2, this one-second block: a quiet 24 minutes with no busy stretch for its
    'drop'. The simulator used to die on it; the block now comes without an anomaly."""
    frame, injections = simulate_block(42, 2, 1247489, 1, anomaly_rate=1.0)
    assert len(frame) == BLOCK_STEPS and injections == []
    assert simulate_block(42, 2, 1247490, 1, anomaly_rate=1.0)[1]  # its neighbour has room


def test_same_seed_same_history_and_other_seed_other_history(db_url):
    start, end = datetime(2026, 2, 2, tzinfo=UTC), datetime(2026, 2, 2, 12, tzinfo=UTC)
    first = cli_json(db_url, "simulate", "--meters", "3", "--from", start.isoformat(), "--to",
                     end.isoformat(), "--seed", "7", "--prefix", "a")
    settings = settings_for(db_url)
    with psycopg.connect(db_url) as conn:
        run = lambda seed, prefix: simulate_history(  # noqa: E731
            conn, settings, meters=3, step_seconds=60, seed=seed, start=start, end=end,
            prefix=prefix, anomaly_rate=0.2)
        run(7, "b")
        run(8, "c")
        again = run(7, "a")
    assert first["loaded"] == 3 * 720 and again.duplicates == 3 * 720 and again.loaded == 0
    a, b, c = values(db_url, "a"), values(db_url, "b"), values(db_url, "c")
    assert a == b
    assert [row[2:] for row in a] != [row[2:] for row in c]


def test_every_anomaly_kind_appears_and_is_labelled(db_url):
    cli_json(db_url, "simulate", "--meters", "9", "--seed", "3", "--prefix", "k", "--anomaly-rate", "1",
             "--from", "2026-03-02T00:00:00+00:00", "--to", "2026-03-03T00:00:00+00:00")
    with psycopg.connect(db_url) as conn:
        labels = conn.execute("SELECT meter_id, start_time, end_time, kind FROM injected_anomalies "
                              "WHERE meter_id LIKE 'k-%' ORDER BY kind").fetchall()
        assert sorted({kind for *_, kind in labels}) == sorted(KINDS)
        for meter, start, end, kind in labels:
            window = conn.execute(
                "SELECT count(*), count(active_power_kw), count(DISTINCT active_power_kw), max(active_power_kw)"
                " FROM readings WHERE meter_id = %s AND time BETWEEN %s AND %s", (meter, start, end)).fetchone()
            day = conn.execute("SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY active_power_kw) "
                               "FROM readings WHERE meter_id = %s", (meter,)).fetchone()[0]
            assert window[0] == (end - start) // timedelta(minutes=1) + 1, (kind, window)
            if kind == "outage":
                assert window[1] == 0  # nothing measured: NULLs, not zeros
            if kind == "flatline":
                assert window[2] == 1
            if kind == "spike":
                assert window[3] > day


def test_live_simulation_matches_the_history_of_the_same_seed(db_url):
    live = cli_json(db_url, "simulate", "--meters", "2", "--interval", "1", "--duration", "3",
                    "--seed", "11", "--prefix", "live", "--metrics-port", "0")
    assert live["loaded"] >= 4 and live["rejected"] == 0
    first, last = datetime.fromisoformat(live["first_time"]), datetime.fromisoformat(live["last_time"])
    cli_json(db_url, "simulate", "--meters", "2", "--interval", "1", "--seed", "11", "--prefix", "bulk",
             "--from", first.isoformat(), "--to", (last + timedelta(seconds=1)).isoformat())
    assert values(db_url, "live") == values(db_url, "bulk")


def terminate_wattwatch_connections(url: str, application: str = "wattwatch") -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database() AND pid <> pg_backend_pid()) t",
            (application,)).fetchone()[0]


def run_while_killing_connections(args: list[str], url: str, meter_like: str, after_rows: int) -> dict:
    """Run an ingest command; once it has stored `after_rows` rows, kill its connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    env["WATTWATCH_DATABASE_URL"] = url
    process = subprocess.Popen([WATTWATCH, "ingest", *args, "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = 0
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            stored = conn.execute("SELECT count(*) FROM readings WHERE meter_id LIKE %s",
                                  (meter_like,)).fetchone()[0]
            if stored >= after_rows:
                killed = terminate_wattwatch_connections(url)
                break
            time.sleep(0.05)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert killed >= 1, "no connection was killed: the test proves nothing"
    return json.loads(out)


def test_simulator_survives_a_lost_connection_without_loss_or_duplicates(db_url):
    summary = run_while_killing_connections(
        ["simulate", "--meters", "3", "--interval", "1", "--duration", "6", "--prefix", "cut",
         "--metrics-port", "0"], db_url, "cut-%", after_rows=6)
    assert summary["reconnects"] >= 1
    with psycopg.connect(db_url) as conn:
        per_meter = conn.execute(
            "SELECT meter_id, count(*), count(DISTINCT time), min(time), max(time) FROM readings "
            "WHERE meter_id LIKE 'cut-%' GROUP BY 1 ORDER BY 1").fetchall()
    assert len(per_meter) == 3
    for _, count, distinct, low, high in per_meter:
        # One reading per second from the first to the last: nothing lost, nothing twice.
        assert count == distinct == int((high - low).total_seconds()) + 1
    assert sum(count for _, count, *_ in per_meter) == summary["loaded"]


def test_replay_follows_the_clock_and_survives_a_lost_connection(db_url, tmp_path):
    path = tmp_path / "feed.csv"
    start = datetime(2025, 6, 1, tzinfo=UTC)
    path.write_text("time,meter,kw\n" + "".join(
        f"{(start + timedelta(minutes=i)).isoformat()},r1,{i / 10}\n" for i in range(150)))
    before = datetime.now(UTC)
    summary = run_while_killing_connections(
        ["replay", str(path), "--speed", "1800", "--map", "kw=active_power_kw", "--metrics-port", "0"],
        db_url, "r1", after_rows=20)
    after = datetime.now(UTC)
    assert summary["loaded"] == 150 and summary["reconnects"] >= 1
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT time, active_power_kw FROM readings WHERE meter_id = 'r1' "
                            "ORDER BY time").fetchall()
    assert [value for _, value in rows] == [i / 10 for i in range(150)]
    assert before <= rows[0][0] and rows[-1][0] <= after
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(rows, rows[1:])]
    assert all(abs(gap - 60 / 1800) < 2e-6 for gap in gaps)  # a minute of the file: 1/30 s of replay


def test_replay_stores_its_history_days_at_once_ending_now_then_goes_on_live(db_url, tmp_path):
    path = tmp_path / "history.csv"
    start = datetime(2025, 6, 1, tzinfo=UTC)
    minutes = 2 * 1440 + 60  # two days of history, then an hour replayed live
    path.write_text("time,meter,kw\n" + "".join(
        f"{(start + timedelta(minutes=i)).isoformat()},h1,{i}\n" for i in range(minutes)))
    before = datetime.now(UTC)
    summary = cli_json(db_url, "replay", str(path), "--history-days", "2", "--speed", "3600",
                       "--map", "kw=active_power_kw", "--metrics-port", "0")
    after = datetime.now(UTC)
    assert summary["loaded"] == minutes
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT time, active_power_kw FROM readings WHERE meter_id = 'h1' "
                            "ORDER BY time").fetchall()
    assert [value for _, value in rows] == list(range(minutes))
    history, live = rows[:2 * 1440], rows[2 * 1440:]
    # The history keeps its minute steps and ends just before the live part begins, at the start.
    assert all(b[0] - a[0] == timedelta(minutes=1) for a, b in zip(history, history[1:]))
    assert before - timedelta(days=2) <= history[0][0] and history[-1][0] < live[0][0] <= after
    assert live[0][0] - history[-1][0] <= timedelta(minutes=1)
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(live, live[1:])]
    assert all(abs(gap - 60 / 3600) < 2e-6 for gap in gaps)


def test_simulate_history_days_then_live_leaves_no_gap(db_url):
    before = datetime.now(UTC)
    live = cli_json(db_url, "simulate", "--meters", "2", "--interval", "1", "--history-days", "0.01",
                    "--duration", "2", "--seed", "13", "--prefix", "hist", "--metrics-port", "0")
    after = datetime.now(UTC)
    with psycopg.connect(db_url) as conn:
        per_meter = conn.execute(
            "SELECT count(*), count(DISTINCT time), min(time), max(time) FROM readings "
            "WHERE meter_id LIKE 'hist-%' GROUP BY meter_id").fetchall()
    assert len(per_meter) == 2
    for count, distinct, low, high in per_meter:
        # the history starts 0.01 days before live, whenever the command got going
        assert before - timedelta(days=0.01, seconds=2) <= low <= after - timedelta(days=0.01)
        assert high - low >= timedelta(days=0.01)
        assert count == distinct == int((high - low).total_seconds()) + 1  # one a second, no gap
    assert live["loaded"] >= 2
