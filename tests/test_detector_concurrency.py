"""Two detectors on one database: a meter is trained and scored by one of them at a time
(per-meter advisory locks), and the schema keeps one active model per meter."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from detector.locks import MeterLocks
from tests.conftest import PROJECT
from tests.support.readings import copy_frame
from tests.test_detector_synthetic import household

METERS = ["c1", "c2", "c3"]


@pytest.fixture(scope="module")
def fresh_meters(db_url):
    """Three meters with three days of readings each, no model, never scored."""
    frames = {meter_id: household(days=3, seed=80 + n) for n, meter_id in enumerate(METERS)}
    with psycopg.connect(db_url) as conn:
        for meter_id, frame in frames.items():
            conn.execute("INSERT INTO meters (meter_id, timezone, tariff_per_kwh, currency)"
                         " VALUES (%s, 'Europe/Paris', 0.25, 'EUR')", (meter_id,))
            copy_frame(conn, meter_id, frame)
    return frames


def test_two_run_once_at_the_same_time_score_every_reading_once(db_url, role_url, fresh_meters):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATTWATCH_")}
    env = {**clean, "WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs"),
           "WATTWATCH_DETECTOR_BATCH_ROWS": "1000", "PYTHONPATH": str(PROJECT)}
    command = [sys.executable, "-m", "wattwatch.cli", "detect", "run", "--once"]
    processes = [subprocess.Popen(command, env=env, cwd=PROJECT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
    total = sum(len(frame) for frame in fresh_meters.values())
    assert sum(int(out.split()[0]) for out, _ in outputs) == total, outputs
    with psycopg.connect(db_url) as conn:
        models = conn.execute("SELECT meter_id, count(*), count(*) FILTER (WHERE status = 'active')"
                              " FROM models GROUP BY meter_id ORDER BY meter_id").fetchall()
        assert models == [(meter_id, 1, 1) for meter_id in METERS]  # each trained once
        scores = conn.execute("SELECT meter_id, count(*), count(DISTINCT time),"
                              " count(DISTINCT model_version), count(*) FILTER (WHERE is_anomaly)"
                              " FROM anomaly_scores GROUP BY meter_id ORDER BY meter_id").fetchall()
        assert [row[:4] for row in scores] == [
            (meter_id, len(frame), len(frame), 1) for meter_id, frame in fresh_meters.items()]
        incidents = conn.execute("SELECT meter_id, count(*), count(DISTINCT start_time),"
                                 " sum(n_readings) FROM anomaly_incidents GROUP BY meter_id"
                                 " ORDER BY meter_id").fetchall()
        anomalous = {row[0]: row[4] for row in scores}
        for meter_id, count, distinct, readings in incidents:
            assert count == distinct and readings == anomalous[meter_id], (meter_id, incidents)
        assert sum(anomalous.values()) == sum(row[3] for row in incidents)
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            ).fetchone()[0] == 0  # released by processes that have exited


def test_a_meter_held_by_one_process_is_left_by_the_other(db_url, fresh_meters):
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        mine, theirs = MeterLocks(first), MeterLocks(second)
        assert mine.claim(["c1", "c2"]) == {"c1", "c2"}
        assert theirs.claim(["c2", "c3"]) == {"c3"}
        assert mine.claim(["c1", "c3"]) == {"c1"}  # still held; c3 is theirs
        mine.release()
        assert theirs.claim(["c1", "c2"]) == {"c1", "c2"}
        first.close()  # a process that dies: its locks go with its connection
        theirs.release()
        with psycopg.connect(db_url) as third:
            assert MeterLocks(third).claim(METERS) == set(METERS)


def test_the_schema_refuses_a_second_active_model_of_a_meter(db_url, fresh_meters):
    insert = ("INSERT INTO models (meter_id, algorithm, reason) VALUES (%s, 'test', 'test')"
              " RETURNING version")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) VALUES ('twice')")
        first = conn.execute(insert, ("twice",)).fetchone()[0]
        with pytest.raises(psycopg.errors.UniqueViolation, match="models_one_active_idx"):
            conn.execute(insert, ("twice",))
        conn.execute("UPDATE models SET status = 'retired' WHERE version = %s", (first,))
        second = conn.execute(insert, ("twice",)).fetchone()[0]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE models SET status = 'active' WHERE version = %s", (first,))
        assert conn.execute("SELECT version FROM models WHERE meter_id = 'twice'"
                            " AND status = 'active'").fetchall() == [(second,)]
        # models shared by all meters (meter_id NULL) are not covered (retired again: the
        # detector would score meters without a model of their own with them)
        conn.execute("INSERT INTO models (algorithm, reason) VALUES ('t', 'test'), ('t', 'test')")
        conn.execute("UPDATE models SET status = 'retired' WHERE meter_id IS NULL")


def test_a_cycle_takes_a_bounded_number_of_meters_and_once_goes_on_until_all_are_done(
        db_url, role_url, fresh_meters, monkeypatch):
    """Every meter worked on holds a lock until its cycle ends: a cycle takes at most
    MAX_METERS_PER_CYCLE meters, those scored longest ago first, and `run --once` goes on
    with later cycles until every meter is done."""
    from prometheus_client import CollectorRegistry

    from detector import service
    from detector.metrics import DetectorMetrics
    from tests.conftest import settings_for

    frames = {meter_id: household(days=3, seed=70 + n) for n, meter_id in
              enumerate(["d1", "d2", "d3"])}
    with psycopg.connect(db_url) as conn:
        for meter_id, frame in frames.items():
            conn.execute("INSERT INTO meters (meter_id) VALUES (%s)", (meter_id,))
            copy_frame(conn, meter_id, frame.iloc[:2 * 1440 + 10])
    monkeypatch.setattr(service, "MAX_METERS_PER_CYCLE", 1)
    cycles = []
    original = service.Scorer.cycle
    monkeypatch.setattr(service.Scorer, "cycle", lambda self: cycles.append(1) or original(self))
    settings = settings_for(role_url("wattwatch_jobs"))
    with psycopg.connect(role_url("wattwatch_jobs")) as conn:
        assert service.run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True) \
            == 3 * (2 * 1440 + 10)
        with psycopg.connect(db_url) as owner:
            for meter_id, frame in frames.items():
                copy_frame(owner, meter_id, frame.iloc[2 * 1440 + 10:2 * 1440 + 12])
        scorer = service.Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
        marks = dict(conn.execute("SELECT meter_id, ingested_at FROM detector_watermarks"
                                  " WHERE meter_id LIKE 'd_'").fetchall())
        conn.commit()
        oldest = min(marks, key=marks.get)
        assert original(scorer) == 2 and scorer.work.meters == {oldest}
        assert scorer.work.busy == set(frames) - {oldest}
    assert len(cycles) == 3
