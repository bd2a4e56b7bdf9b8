"""The detector against the real TimescaleDB and Prometheus, as the wattwatch_jobs role:
registry, backfill, exactly-once scores after a crash, late readings, retraining, incidents
with cost, metrics, daily patterns."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from detector import incidents, pipeline, readings, registry
from detector.habituation import score_series
from detector.metrics import DetectorMetrics
from detector.patterns import store_patterns
from detector.readings import meters
from detector.scores import ScoreStore
from detector.service import Scorer, run
from detector.stacked import Stack
from ingest.anomalies import inject_many
from tests.conftest import prometheus_query, settings_for
from tests.support.readings import copy_frame
from tests.test_cli import run_cli
from tests.test_detector_synthetic import household
from wattwatch.metrics import serve_metrics

TRAIN_DAYS = 4
TARIFF = 0.25


def _add_meter(db_url: str, meter_id: str, frame) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO meters (meter_id, timezone, tariff_per_kwh, currency)"
                     " VALUES (%s, 'Europe/Paris', %s, 'EUR')", (meter_id, TARIFF))
        copy_frame(conn, meter_id, frame)


@pytest.fixture(scope="module")
def jobs(role_url):
    """Settings and a connection as the jobs role (what compose runs the detector as)."""
    settings = settings_for(role_url("wattwatch_jobs"), detector_batch_rows=5000)
    with psycopg.connect(role_url("wattwatch_jobs")) as conn:
        yield settings, conn


def _meter(conn, meter_id):
    return meters(conn, meter_id)[0]


def _train(conn, settings, meter_id, frame, reason="initial"):
    with conn.transaction():
        return registry.train(conn, _meter(conn, meter_id), settings, start=frame.index[0],
                              end=frame.index[TRAIN_DAYS * 1440], reason=reason)


@pytest.fixture(scope="module")
def house(db_url, jobs):
    """Eight days of a house with anomalies after the training days, trained and backfilled."""
    settings, conn = jobs
    frame = household(days=8, seed=21)
    injected = inject_many(frame, np.random.default_rng(4), per_kind=1, min_gap=300,
                           skip=TRAIN_DAYS * 1440 + 60)
    _add_meter(db_url, "house", frame)
    version = _train(conn, settings, "house", frame)
    written = run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True)
    return frame, injected, version, written


def test_readings_come_back_exactly_with_missing_values_as_nan(db_url, jobs):
    """The binary arrays the detector reads: times to the microsecond in the meter's zone,
    ingested_at, values, and NULL (a missing value) as NaN; also a window with no reading."""
    conn = jobs[1]
    frame = household(days=1, seed=3).iloc[:5]
    frame.index = frame.index + pd.to_timedelta([0, 1, 17, 999_999, 123_456], unit="us")
    frame.iloc[2, frame.columns.get_loc("voltage_v")] = np.nan
    _add_meter(db_url, "exact", frame)
    meter = _meter(conn, "exact")
    read = readings.window(conn, meter, None, None)
    conn.commit()
    assert list(read.index) == list(frame.index.tz_convert("Europe/Paris"))
    assert str(read.index.tz) == "Europe/Paris"
    assert read["ingested_at"].nunique() == 1 and read["ingested_at"].iloc[0] > frame.index[-1]
    np.testing.assert_array_equal(read[frame.columns].to_numpy(), frame.to_numpy())
    assert np.isnan(read["voltage_v"].iloc[2])
    empty = readings.window(conn, meter, frame.index[-1] + timedelta(days=1), None)
    conn.commit()
    assert empty.empty and list(empty.columns) == list(read.columns)


def test_training_stores_a_validated_versioned_model(house, jobs):
    _, conn = jobs[1], jobs[1]
    frame, _, version, _ = house
    row = conn.execute("SELECT meter_id, algorithm, train_from, train_to, threshold, metrics,"
                       " parameters, status, reason FROM models WHERE version = %s",
                       (version,)).fetchone()
    meter_id, algorithm, start, end, threshold, metrics, parameters, status, reason = row
    assert (meter_id, algorithm, status, reason) == ("house", "seasonal-iforest", "active", "initial")
    assert start == frame.index[0] and end < frame.index[TRAIN_DAYS * 1440]
    assert 50 <= threshold <= 100
    assert metrics["train_rows"] == TRAIN_DAYS * 1440 and 0 <= metrics["validation_anomaly_ratio"] < 0.01
    assert "voltage_v" in parameters["fields"] and "voltage_v:band" in parameters["features"]
    assert registry.load(conn, version).detector.threshold_ == threshold


def test_backfill_scores_every_reading_once_with_incidents_and_cost(house, jobs):
    conn = jobs[1]
    frame, injected, version, written = house
    assert written == len(frame)
    count, distinct, anomalies = conn.execute(
        "SELECT count(*), count(DISTINCT time), count(*) FILTER (WHERE is_anomaly)"
        " FROM anomaly_scores WHERE meter_id = 'house'").fetchone()
    assert count == distinct == len(frame)
    incidents = conn.execute(
        "SELECT start_time, end_time, n_readings, severity, kind, excess_energy_kwh,"
        " estimated_cost, currency FROM anomaly_incidents WHERE meter_id = 'house'"
        " ORDER BY start_time").fetchall()
    assert sum(i[2] for i in incidents) == anomalies
    for start, end, n, severity, kind, excess, cost, currency in incidents:
        assert severity in ("low", "medium", "high", "critical") and kind and currency == "EUR"
        assert cost == pytest.approx(excess * TARIFF)
    # Every outage, flatline and voltage anomaly injected lies in an incident, and its flagged
    # readings carry its kind.
    for injection in injected:
        if injection.kind in ("outage", "voltage_sag", "voltage_swell", "flatline"):
            assert any(i[0] <= injection.end and i[1] >= injection.start for i in incidents)
            kind = conn.execute(
                "SELECT kind FROM anomaly_scores WHERE meter_id = 'house' AND is_anomaly"
                " AND time BETWEEN %s AND %s GROUP BY kind ORDER BY count(*) DESC LIMIT 1",
                (injection.start, injection.end)).fetchone()
            assert kind == (injection.kind,), injection
    # The level shift's incidents used more energy than expected.
    shift = next(i for i in injected if i.kind == "level_shift")
    during = [i[5] for i in incidents if i[0] <= shift.end and i[1] >= shift.start]
    assert during and sum(during) > 0
    # Nothing is pending: another pass writes nothing and rewrites nothing.
    before = conn.execute("SELECT max(scored_at) FROM anomaly_scores").fetchone()[0]
    conn.commit()
    assert run(conn, jobs[0], DetectorMetrics(CollectorRegistry()), once=True) == 0
    assert conn.execute("SELECT max(scored_at), count(*) FROM anomaly_scores"
                        " WHERE meter_id = 'house'").fetchone() == (before, len(frame))


def test_crash_in_the_middle_then_restart_leaves_no_duplicate_or_gap(db_url, jobs, monkeypatch):
    settings, conn = jobs
    frame = household(days=6, seed=5)
    _add_meter(db_url, "crashy", frame)
    _train(conn, settings, "crashy", frame)
    original = ScoreStore.write
    calls = []

    class Crash(BaseException):
        """The process killed in the middle: nothing handles it (an Exception is one meter's
        failure, reported while the others go on)."""

    def crash_on_second_batch(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("simulated crash")
        return original(self, *args)

    monkeypatch.setattr(ScoreStore, "write", crash_on_second_batch)
    with pytest.raises(Crash):
        run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True)
    conn.rollback()
    partial = conn.execute("SELECT count(*) FROM anomaly_scores WHERE meter_id = 'crashy'").fetchone()[0]
    assert partial == settings.detector_batch_rows < len(frame)
    monkeypatch.setattr(ScoreStore, "write", original)
    run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True)
    count, distinct, anomalies = conn.execute(
        "SELECT count(*), count(DISTINCT time), count(*) FILTER (WHERE is_anomaly)"
        " FROM anomaly_scores WHERE meter_id = 'crashy'").fetchone()
    assert count == distinct == len(frame)
    incident_readings = conn.execute("SELECT coalesce(sum(n_readings), 0) FROM anomaly_incidents"
                                     " WHERE meter_id = 'crashy'").fetchone()[0]
    assert incident_readings == anomalies


def test_late_reading_is_scored_and_a_retrain_request_makes_a_new_version(db_url, house, jobs):
    settings, conn = jobs
    frame, _, version, _ = house
    late = frame.iloc[[-1]].copy()
    late.index = late.index + timedelta(minutes=1)  # newest first ...
    older = frame.iloc[[100]].copy()
    with psycopg.connect(db_url) as owner:
        owner.execute("DELETE FROM anomaly_scores WHERE meter_id = 'house' AND time = %s",
                      (older.index[0],))  # ... and an old reading that arrives late
        owner.execute("DELETE FROM readings WHERE meter_id = 'house' AND time = %s",
                      (older.index[0],))
        copy_frame(owner, "house", late)
        copy_frame(owner, "house", older)
    conn.execute("INSERT INTO retrain_requests (meter_id, reason, requested_by)"
                 " VALUES ('house', 'critical drift on voltage_v', 'drift')")
    conn.commit()
    old_scores = conn.execute("SELECT count(*), max(scored_at) FROM anomaly_scores"
                              " WHERE model_version = %s", (version,)).fetchone()
    conn.commit()
    assert run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True) == 2
    new_version, reason = conn.execute(
        "SELECT version, reason FROM models WHERE meter_id = 'house' AND status = 'active'").fetchone()
    assert new_version > version and reason == "retrain request: critical drift on voltage_v"
    assert conn.execute("SELECT status FROM models WHERE version = %s", (version,)).fetchone() == ("retired",)
    assert conn.execute("SELECT handled_at IS NOT NULL, model_version FROM retrain_requests").fetchone() \
        == (True, new_version)
    scored = conn.execute("SELECT time FROM anomaly_scores WHERE model_version = %s ORDER BY time",
                          (new_version,)).fetchall()
    assert [t for (t,) in scored] == [older.index[0], late.index[0]]
    assert conn.execute("SELECT count(*), max(scored_at) FROM anomaly_scores WHERE model_version = %s",
                        (version,)).fetchone() == old_scores
    conn.commit()


def test_metrics_reach_prometheus(db_url, jobs, stack, scrape_target):
    settings, conn = jobs
    frame = household(days=5, seed=8)
    sag = 200.0 + np.random.default_rng(0).normal(0, 0.5, 30)  # a sag to be counted
    frame.iloc[-30:, frame.columns.get_loc("voltage_v")] = sag.round(2)
    _add_meter(db_url, "metered", frame)
    _train(conn, settings, "metered", frame)
    metrics_registry = CollectorRegistry()
    metrics = DetectorMetrics(metrics_registry)
    port = serve_metrics(metrics_registry, 0)
    Scorer(conn, settings, metrics).cycle()
    target = scrape_target("detector", port)
    base = stack["prometheus_url"]
    scored = prometheus_query(
        base, f'wattwatch_detector_scored_readings_total{{{target},meter_id="metered"}}')
    assert float(scored[0]["value"][1]) == len(frame)
    sags = prometheus_query(base, f'sum(wattwatch_detector_anomalies_total{{{target},kind="voltage_sag"}})')
    assert float(sags[0]["value"][1]) >= 25
    info = prometheus_query(base, f'wattwatch_detector_model_info{{{target},meter_id="metered"}}')
    assert info[0]["metric"]["algorithm"] == "seasonal-iforest"
    batches = prometheus_query(base, f"wattwatch_detector_batch_duration_seconds_count{{{target}}}")
    assert float(batches[0]["value"][1]) >= len(frame) / settings.detector_batch_rows
    lag = prometheus_query(base, f'wattwatch_detector_scoring_lag_seconds{{{target},meter_id="metered"}}')
    assert 0 <= float(lag[0]["value"][1]) < 600


def test_daily_patterns_single_out_an_atypical_day(db_url, jobs):
    settings, conn = jobs
    frame = household(days=28, seed=13)[["active_power_kw"]]
    odd = frame.index.normalize() == frame.index.normalize()[20 * 1440]
    frame.loc[odd, "active_power_kw"] = 2.5  # a day at full load around the clock
    _add_meter(db_url, "patterned", frame)
    with conn.transaction():
        summary = store_patterns(conn, _meter(conn, "patterned"), days=60)
    rows = conn.execute("SELECT day, cluster, is_atypical FROM daily_patterns"
                        " WHERE meter_id = 'patterned' ORDER BY day").fetchall()
    atypical = [day for day, _, flag in rows if flag]
    assert frame.index[20 * 1440].tz_convert("Europe/Paris").date() in atypical
    assert len(atypical) <= 6 and len({c for _, c, _ in rows if c >= 0}) >= 1
    profiles = conn.execute("SELECT cluster, count(*) FROM daily_pattern_profiles"
                            " WHERE meter_id = 'patterned' GROUP BY cluster").fetchall()
    assert all(n == 24 for _, n in profiles)
    assert "typical pattern" in summary


def test_cli_run_once_and_train_as_the_jobs_role(role_url):
    env = {"WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs")}
    trained = run_cli(["detect", "train", "--meter", "house", "--reason", "manual"], env=env,
                      timeout=120)
    assert trained.returncode == 0, trained.stderr
    assert "model version" in trained.stdout
    ran = run_cli(["detect", "run", "--once"], env=env, timeout=120)
    # every meter scored but 'exact', whose five readings cannot train a model: named at the end
    assert ran.returncode == 1, ran.stderr
    assert "readings scored" in ran.stdout
    assert ran.stderr.splitlines()[-1] == (
        "wattwatch detect: 1 meter not scored: meter 'exact' has 5 readings between "
        "2025-12-08 00:04 and 2026-01-05 00:04 (training needs at least 2880)"), ran.stderr
    assert "Traceback" not in ran.stderr
    missing = run_cli(["detect", "train", "--meter", "nowhere"], env=env)
    assert missing.returncode == 1 and "no meter 'nowhere'" in missing.stderr


def test_batch_commands_go_on_past_a_meter_that_fails(db_url, jobs, role_url):
    """`detect train` (every meter) and `detect run --once` handle every meter they can, then
    name in one line on stderr each one they could not, and why; exit status 1."""
    conn = jobs[1]
    frame = household(days=3, seed=41)
    _add_meter(db_url, "fine", frame)
    _add_meter(db_url, "short", frame.iloc[:100])
    env = {"WATTWATCH_DATABASE_URL": role_url("wattwatch_jobs")}
    trained = run_cli(["detect", "train"], env=env, timeout=600)
    assert trained.returncode == 1, trained.stderr
    assert "meter fine: model version" in trained.stdout  # after 'exact', before 'short'
    failed = trained.stderr.splitlines()[-1]
    assert failed.startswith("wattwatch detect: 2 of "), failed
    assert "meters not trained: meter 'exact' has 5 readings between" in failed
    assert "; meter 'short' has 100 readings between" in failed
    ran = run_cli(["detect", "run", "--once"], env=env, timeout=300)
    assert ran.returncode == 1, ran.stderr
    assert ran.stdout.strip() == f"{len(frame)} readings scored"
    assert ran.stderr.splitlines()[-1].startswith(
        "wattwatch detect: 2 meters not scored: meter 'exact' has 5 readings"), ran.stderr
    assert conn.execute("SELECT count(*), count(DISTINCT time) FROM anomaly_scores"
                        " WHERE meter_id = 'fine'").fetchone() == (len(frame), len(frame))
    conn.commit()


def test_a_meters_unexpected_error_is_one_line_and_the_others_are_scored(db_url, jobs, caplog,
                                                                          monkeypatch):
    """An error scoring one meter names it in one line (its traceback at DEBUG only), is
    reported, and the other meters are scored; the meter is tried again after a backoff, and
    scored then."""
    settings, conn = jobs
    frame = household(days=5, seed=42)
    for meter_id in ("good", "bad"):
        _add_meter(db_url, meter_id, frame)
        _train(conn, settings, meter_id, frame)
    original = pipeline.score_frame

    def fails_for_bad(pending, *args):
        if pending.meter.meter_id == "bad":
            raise ValueError("no luck\nsecond line")
        return original(pending, *args)

    monkeypatch.setattr(pipeline, "score_frame", fails_for_bad)
    scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
    clock = [0.0]
    scorer.held_back.clock = lambda: clock[0]
    with caplog.at_level("DEBUG", logger="wattwatch.detector"):
        assert scorer.cycle() == len(frame)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in errors] == ["meter bad: ValueError: no luck"]
    assert errors[0].exc_info is None
    assert [r.levelname for r in caplog.records if r.exc_info] == ["DEBUG"]
    assert scorer.work.failed["bad"] == "meter 'bad': ValueError: no luck"
    cycle_line = [r for r in caplog.records if r.getMessage().startswith("cycle:")][-1]
    assert cycle_line.levelname == "INFO" and "1 meter scored" in cycle_line.getMessage()
    monkeypatch.setattr(pipeline, "score_frame", original)
    assert scorer.cycle() == 0  # held back: not tried at every cycle
    clock[0] += 31
    assert scorer.cycle() == len(frame)
    assert conn.execute("SELECT meter_id, count(*), count(DISTINCT time) FROM anomaly_scores"
                        " WHERE meter_id IN ('good', 'bad') GROUP BY meter_id ORDER BY 1"
                        ).fetchall() == [("bad", len(frame), len(frame)),
                                         ("good", len(frame), len(frame))]
    conn.commit()


def test_a_meter_that_cannot_be_trained_is_logged_once_and_tried_with_backoff(
        db_url, jobs, caplog, monkeypatch):
    settings, conn = jobs
    _add_meter(db_url, "newbie", household(days=1, seed=43).iloc[:60])
    attempts = []
    original = registry.fit

    def counting(meter, *args, **kwargs):
        attempts.append(meter.meter_id)
        return original(meter, *args, **kwargs)

    monkeypatch.setattr(registry, "fit", counting)
    # fitted in this process, where the attempts are counted
    in_process = settings.model_copy(update={"detector_train_processes": 1})
    scorer = Scorer(conn, in_process, DetectorMetrics(CollectorRegistry()))
    clock = [0.0]
    scorer.held_back.clock = lambda: clock[0]
    with caplog.at_level("INFO", logger="wattwatch.detector"):
        for _ in range(3):
            scorer.cycle()
        clock[0] += 31
        scorer.cycle()
        scorer.cycle()
        clock[0] += 61
        scorer.cycle()
    assert attempts.count("newbie") == 3  # at 0 s, after 30 s, after 60 s more
    said = [r.getMessage() for r in caplog.records if "newbie" in r.getMessage()]
    assert said == ["meter 'newbie' has 60 readings between 2025-12-08 00:59 and 2026-01-05 00:59"
                    " (training needs at least 2880); not scored yet, trying again in 30 s and"
                    " then less often"], said


def test_batches_and_live_cycles_score_like_one_pass(db_url, jobs, monkeypatch):
    """A backfill in batches, then readings arriving a few at a time for two meters (scored
    together in one write per cycle, by one service that keeps each meter's last readings so
    that it reads only the new ones), give the scores of one pass over the whole series."""
    settings, conn = jobs
    frames = {meter_id: household(days=6, seed=seed) for meter_id, seed in (("s1", 31), ("s2", 32))}
    history = 5 * 1440
    for meter_id, frame in frames.items():
        _add_meter(db_url, meter_id, frame.iloc[:history])
        _train(conn, settings, meter_id, frame)
    with psycopg.connect(db_url) as owner:  # stored well before the live readings below
        owner.execute("UPDATE readings SET ingested_at = ingested_at - interval '1 hour'"
                      " WHERE meter_id IN ('s1', 's2')")
    run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True)  # batches of 5000
    writes, reads, passes = [], [], []
    original_write, original_pass = ScoreStore.write, Stack.score
    original_group, original_new = readings.group_rows, readings.new_rows

    def counting(self, write_conn, batch, work):
        writes.append(sorted(meter.meter_id for scored in batch for meter in scored.meters))
        return original_write(self, write_conn, batch, work)

    def with_context(read_conn, wanted, limit):
        if wanted:
            reads.append(("context", [context for *_, context in wanted]))
        return original_group(read_conn, wanted, limit)

    def new_only(read_conn, wanted, since):
        if wanted:
            reads.append(("new", [meter.meter_id for meter, *_ in wanted]))
        return original_new(read_conn, wanted, since)

    def stacked(self, meter_ids, *args):
        passes.append(list(meter_ids))
        return original_pass(self, meter_ids, *args)

    monkeypatch.setattr(ScoreStore, "write", counting)
    monkeypatch.setattr(readings, "group_rows", with_context)
    monkeypatch.setattr(readings, "new_rows", new_only)
    monkeypatch.setattr(Stack, "score", stacked)
    scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
    for start in range(history, history + 30, 3):
        for meter_id, frame in frames.items():
            with psycopg.connect(db_url) as owner:
                copy_frame(owner, meter_id, frame.iloc[start:start + 3])
        assert scorer.cycle() == 6
    assert writes == [["s1", "s2"]] * 10, writes  # one write for both meters each cycle
    assert passes == [["s1", "s2"]] * 10, passes  # both meters' models in one pass each cycle
    # the readings before the new ones read from the database in the first live cycle only
    contexts = [scorer.cache.models[m].context_rows for m in ("s1", "s2")]
    assert reads == [("context", contexts)] + [("new", ["s1", "s2"])] * 9, reads
    for meter_id in frames:
        model = registry.load(conn, registry.active_versions(conn, [meter_id])[meter_id])
        stored_readings = readings.window(conn, _meter(conn, meter_id), None, None)
        assert len(stored_readings) == history + 30
        expected = score_series(model.detector, stored_readings[model.fields])
        rows = conn.execute(
            "SELECT score, is_anomaly, severity, kind, top_feature, expected_active_power_kw,"
            " evidence FROM anomaly_scores WHERE meter_id = %s ORDER BY time", (meter_id,)).fetchall()
        conn.commit()
        assert len(rows) == len(expected)
        stored = np.array([row[0] for row in rows])
        np.testing.assert_array_equal(stored.astype(np.float32), expected["score"].to_numpy())
        assert [row[1:5] for row in rows] == [
            (bool(r.is_anomaly), r.severity, r.kind, r.top_feature)
            for r in expected.itertuples()]
        np.testing.assert_allclose(np.array([row[5] for row in rows], dtype=float),
                                   expected["expected"].to_numpy(float), rtol=1e-12)
        np.testing.assert_array_equal(np.array([row[6] for row in rows], dtype=np.float32),
                                      expected["evidence"].to_numpy())
    # A reading older than the last one scored arrives late: scored with its context read again.
    s1, s2 = frames["s1"], frames["s2"]
    live = history + 30
    with psycopg.connect(db_url) as owner:
        copy_frame(owner, "s1", s1.iloc[[live, live + 2]])
        copy_frame(owner, "s2", s2.iloc[live:live + 3])
    assert scorer.cycle() == 5
    with psycopg.connect(db_url) as owner:
        copy_frame(owner, "s1", s1.iloc[[live + 1]])
    assert scorer.cycle() == 1
    assert reads[-2:] == [("new", ["s1", "s2"]), ("context", contexts[:1])], reads
    model = scorer.cache.models["s1"]
    expected = score_series(model.detector, s1.iloc[:live + 2][model.fields]).iloc[-1]
    score, anomalous = conn.execute("SELECT score, is_anomaly FROM anomaly_scores"
                                    " WHERE meter_id = 's1' AND time = %s",
                                    (s1.index[live + 1],)).fetchone()
    conn.commit()
    assert (np.float32(score), anomalous) == (expected["score"], expected["is_anomaly"])


def test_live_cycle_scores_a_baseline_meter_beside_stacked_ones(db_url, jobs):
    """A meter on the iforest-raw baseline (not stackable) is scored by its own model in the
    same live cycles as meters scored in a stack."""
    settings, conn = jobs
    frames = {meter_id: household(days=4, seed=seed) for meter_id, seed in
              (("raw1", 51), ("st1", 52), ("st2", 53))}
    history = 3 * 1440
    for meter_id, frame in frames.items():
        _add_meter(db_url, meter_id, frame.iloc[:history])
        with conn.transaction():
            registry.train(conn, _meter(conn, meter_id), settings, start=frame.index[0],
                           end=frame.index[history - 1],
                           algorithm="iforest-raw" if meter_id == "raw1" else "seasonal-iforest")
    scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
    scorer.cycle()  # the history, in batches
    for start in range(history, history + 6, 2):
        for meter_id, frame in frames.items():
            with psycopg.connect(db_url) as owner:
                copy_frame(owner, meter_id, frame.iloc[start:start + 2])
        assert scorer.cycle() == 6
    assert [layout is None for layout in map(scorer.cache.layouts.get, frames)] == [True, False, False]
    for meter_id in frames:
        model = scorer.cache.models[meter_id]
        stored_readings = readings.window(conn, _meter(conn, meter_id), None, None)
        assert len(stored_readings) == history + 6
        expected = score_series(model.detector, stored_readings[model.fields])
        stored = conn.execute("SELECT score FROM anomaly_scores WHERE meter_id = %s"
                              " ORDER BY time", (meter_id,)).fetchall()
        conn.commit()
        np.testing.assert_array_equal(np.array([s for (s,) in stored], dtype=np.float32),
                                      expected["score"].to_numpy())


def test_readings_committed_after_the_watermark_passed_them_are_scored(db_url, jobs):
    """A transaction stamps ingested_at when it starts: readings it commits after a cycle
    moved the watermark past that stamp are found again, whether their time follows the last
    reading the service holds or falls in a gap before it."""
    settings, conn = jobs
    frame = household(days=6, seed=61)
    history = 5 * 1440
    gap = history - 5  # a reading missing from the history, arriving late
    _add_meter(db_url, "lc", frame.iloc[:history].drop(frame.index[gap]))
    _train(conn, settings, "lc", frame)
    scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
    scorer.cycle()  # in batches, the last of which the service keeps for the live cycles
    held = scorer.tails["lc"].rows
    assert len(held) == scorer.cache.models["lc"].context_rows
    assert held.t[-1] == frame.index[history - 1].value // 1000
    with psycopg.connect(db_url) as owner:
        copy_frame(owner, "lc", frame.iloc[history:history + 2])
    assert scorer.cycle() == 2
    with psycopg.connect(db_url) as owner:
        mark = owner.execute("SELECT ingested_at FROM detector_watermarks"
                             " WHERE meter_id = 'lc'").fetchone()[0]
        copy_frame(owner, "lc", frame.iloc[[gap, history + 2]])
        owner.execute("UPDATE readings SET ingested_at = %s WHERE meter_id = 'lc'"
                      " AND time IN (%s, %s)", (mark - timedelta(seconds=2),
                                                frame.index[gap], frame.index[history + 2]))
        copy_frame(owner, "lc", frame.iloc[[history + 3]])
    assert scorer.cycle() == 3
    count, distinct = conn.execute("SELECT count(*), count(DISTINCT time) FROM anomaly_scores"
                                   " WHERE meter_id = 'lc'").fetchone()
    conn.commit()
    assert count == distinct == history + 4
    assert scorer.cycle() == 0  # nothing found twice


def test_an_idle_cycle_closes_the_late_commit_check(db_url, jobs):
    """Once every reading up to an idle meter's watermark has committed, a cycle looks at the
    readings stored just before it one last time (scoring one committed late) and closes the
    check: later cycles look at nothing before the watermark."""
    settings, conn = jobs
    frame = household(days=6, seed=62)
    history = 5 * 1440
    gap = history - 5
    for meter_id in ("idle", "quiet"):  # quiet: nothing comes late
        _add_meter(db_url, meter_id, frame.iloc[:history].drop(frame.index[gap]))
        _train(conn, settings, meter_id, frame)
    scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
    scorer.cycle()  # the history, stored less than LATE_COMMIT before: the check is open
    marks = ("SELECT ingested_at, recheck_after FROM detector_watermarks"
             " WHERE meter_id IN ('idle', 'quiet') ORDER BY meter_id")
    (mark, recheck), (quiet_mark, quiet_recheck) = conn.execute(marks).fetchall()
    conn.commit()
    assert recheck < mark and quiet_recheck < quiet_mark
    with psycopg.connect(db_url) as owner:  # as if all that happened a minute ago
        owner.execute("UPDATE detector_watermarks SET ingested_at = ingested_at - %(a)s,"
                      " recheck_after = recheck_after - %(a)s WHERE meter_id IN ('idle', 'quiet')",
                      {"a": timedelta(minutes=1)})
        owner.execute("UPDATE readings SET ingested_at = ingested_at - %s"
                      " WHERE meter_id IN ('idle', 'quiet')", (timedelta(minutes=1),))
        # Stamped inside the open window, between where the check starts and the watermark
        # (how far apart they are depends on how long the first cycle took to start).
        copy_frame(owner, "idle", frame.iloc[[gap]])
        late = recheck + (mark - recheck) / 2 - timedelta(minutes=1)
        owner.execute("UPDATE readings SET ingested_at = %s WHERE meter_id = 'idle'"
                      " AND time = %s", (late, frame.index[gap]))
    assert scorer.cycle() == 1
    assert scorer.cycle() == 0
    (mark, recheck), quiet = conn.execute(marks).fetchall()
    scored = conn.execute("SELECT count(*), count(DISTINCT time) FROM anomaly_scores"
                          " WHERE meter_id = 'idle'").fetchone()
    conn.commit()
    assert recheck == mark
    assert quiet == (quiet_mark - timedelta(minutes=1),) * 2  # closed where it stood
    assert scored == (history, history)


def test_incidents_of_many_meters_are_merged_in_one_call(db_url, jobs):
    """One call records several meters' anomalous readings: a new incident for each, and a
    later call extends the incident its readings continue, without touching the other's."""
    settings, conn = jobs
    frame = household(days=1, seed=71)
    for meter_id in ("inc1", "inc2"):
        _add_meter(db_url, meter_id, frame.iloc[:10])
    with conn.transaction():
        version = conn.execute("INSERT INTO models (meter_id, algorithm, parameters, train_from,"
                               " train_to, threshold, metrics, model, reason) VALUES ('inc1',"
                               " 'seasonal-iforest', '{}', now(), now(), 50, '{}', '', 'test')"
                               " RETURNING version").fetchone()[0]

    def readings_at(positions, score, at):
        index = frame.index[positions]
        return pd.DataFrame({"at": at, "raw_score": score, "raw_evidence": score / 12.5,
                             "kind": "spike", "expected": 0.5, "actual": 1.5,
                             "top_feature": "active_power_kw:seasonal"}, index=index)

    with psycopg.connect(db_url) as owner:  # the scores an incident's kind is counted from
        owner.execute("INSERT INTO anomaly_scores (time, meter_id, model_version, score,"
                      " is_anomaly, severity, kind) SELECT t, 'inc1', %s, 80, true, 'high',"
                      " 'spike' FROM unnest(%s::timestamptz[]) AS t",
                      (version, list(frame.index[[1, 2, 4]])))
    step = timedelta(minutes=1)
    owners = [incidents.Owner(_meter(conn, meter_id), version, step)
              for meter_id in ("inc1", "inc2")]
    with conn.transaction():
        touched, opened = incidents.record(conn, owners, pd.concat([readings_at([3], 95.0, 1),
                                                            readings_at([1, 2], 70.0, 0)]))
    assert touched.tolist() == [1, 1] and opened == 2
    with conn.transaction():
        extended, opened = incidents.record(conn, owners, readings_at([4], 85.0, 0))
    assert extended.tolist() == [1, 0] and opened == 0
    rows = conn.execute("SELECT meter_id, start_time, end_time, n_readings, peak_score, severity,"
                        " excess_energy_kwh, estimated_cost FROM anomaly_incidents"
                        " WHERE meter_id IN ('inc1', 'inc2') ORDER BY meter_id").fetchall()
    conn.commit()
    assert rows == [
        ("inc1", frame.index[1], frame.index[4], 3, 85.0, "high", 3 / 60, 3 / 60 * TARIFF),
        ("inc2", frame.index[3], frame.index[3], 1, 95.0, "critical", 1 / 60, 1 / 60 * TARIFF)]


def test_two_runs_extending_one_incident_both_count(db_url, jobs):
    """A late reading just before an incident and new readings just after it, more than an
    incident gap apart, extend the same incident in one call: both add their energy, and the
    severity is the highest peak's."""
    settings, conn = jobs
    frame = household(days=1, seed=72)
    _add_meter(db_url, "inc3", frame.iloc[:10])
    with conn.transaction():
        version = conn.execute("INSERT INTO models (meter_id, algorithm, parameters, train_from,"
                               " train_to, threshold, metrics, model, reason) VALUES ('inc3',"
                               " 'seasonal-iforest', '{}', now(), now(), 50, '{}', '', 'test')"
                               " RETURNING version").fetchone()[0]
    with psycopg.connect(db_url) as owner:
        owner.execute("INSERT INTO anomaly_scores (time, meter_id, model_version, score,"
                      " is_anomaly, severity, kind) SELECT t, 'inc3', %s, 80, true, 'high',"
                      " 'spike' FROM unnest(%s::timestamptz[]) AS t",
                      (version, list(frame.index[[45, 100, 150, 200, 255]])))
    owners = [incidents.Owner(_meter(conn, "inc3"), version, timedelta(minutes=1))]

    def readings_at(positions, scores):
        return pd.DataFrame({"at": 0, "raw_score": scores,
                             "raw_evidence": np.divide(scores, 12.5), "kind": "spike",
                             "expected": 0.5, "actual": 1.5,
                             "top_feature": "active_power_kw:seasonal"},
                            index=frame.index[positions])

    with conn.transaction():
        incidents.record(conn, owners, readings_at([100, 150, 200], 70.0))
    with conn.transaction():
        touched, opened = incidents.record(conn, owners, readings_at([45, 255], [95.0, 85.0]))
    assert touched.tolist() == [2] and opened == 0
    rows = conn.execute("SELECT start_time, end_time, n_readings, peak_score, peak_evidence,"
                        " severity, excess_energy_kwh, estimated_cost FROM anomaly_incidents"
                        " WHERE meter_id = 'inc3'").fetchall()
    conn.commit()
    assert rows == [(frame.index[45], frame.index[255], 5, 95.0, np.float32(95.0 / 12.5),
                     "critical", 5 / 60, 5 / 60 * TARIFF)]


def test_a_first_model_holds_out_the_newest_days_when_enough_are_older(db_url, jobs):
    """With a holdout, a meter's first model stops that many days before its newest reading so
    they are scored as new data; a meter too young for it learns everything it has."""
    settings, conn = jobs
    frame = household(days=5, seed=71)
    _add_meter(db_url, "holdout-old", frame)
    _add_meter(db_url, "holdout-young", frame.iloc[:3 * 1440])
    ends = {}
    for meter_id in ("holdout-old", "holdout-young"):
        with conn.transaction():
            version = registry.train(conn, _meter(conn, meter_id), settings, holdout_days=2, reason="initial")
        ends[meter_id] = conn.execute("SELECT train_to FROM models WHERE version = %s", (version,)).fetchone()[0]
    conn.commit()
    last_old = frame.index[-1]
    assert last_old - timedelta(days=2, minutes=1) <= ends["holdout-old"] < last_old - timedelta(days=2)
    assert ends["holdout-young"] == frame.index[3 * 1440 - 1]  # one day left: it learns all three
