"""Habituation: a persisting anomalous state is less news with every reading, alike in one
pass (score-csv) and in the service's batches and live cycles, whose open run comes from
anomaly_incidents."""

from __future__ import annotations

import numpy as np
import psycopg
from prometheus_client import CollectorRegistry

from detector import readings, registry
from detector.habituation import OpenRun, discount, score_series
from detector.incident_runs import INCIDENT_GAP
from detector.metrics import DetectorMetrics
from detector.service import Scorer, run
from tests.conftest import settings_for
from tests.support.readings import copy_frame
from tests.test_detector_service import _add_meter, _meter, _train, jobs  # noqa: F401 (fixture)
from tests.test_detector_synthetic import household

HORIZON = 6.0


def test_a_persisting_state_keeps_its_onset_and_discounts_what_it_repeats():
    times = np.arange(8)
    evidence = np.array([1.0, 20.0, 20.0, 20.0, 50.0, 20.0, 1.0, 20.0])
    anomalous = evidence > 4
    out, run_after = discount(times, evidence, anomalous, 1, HORIZON, None)
    assert out[0] == 1.0 and out[6] == 1.0  # ordinary readings are left alone
    assert out[1] == 20.0  # the onset keeps its evidence
    kept = HORIZON / (HORIZON + np.array([1.0, 2.0]))
    np.testing.assert_allclose(out[2:4], 20.0 * kept)  # the same state, older: less news
    # a stronger turn keeps what it adds beyond the run's peak
    np.testing.assert_allclose(out[4], 30.0 + 20.0 * HORIZON / (HORIZON + 3))
    np.testing.assert_allclose(out[5], 20.0 * HORIZON / (HORIZON + 4))
    np.testing.assert_allclose(out[7], 20.0 * HORIZON / (HORIZON + 6))  # a short pause: same run
    assert run_after == OpenRun(1, 7, 50.0)
    # after a pause longer than an incident's gap, a run starts afresh
    again, fresh = discount(np.array([7 + INCIDENT_GAP + 1]), np.array([20.0]), np.array([True]),
                            1, HORIZON, run_after)
    assert again[0] == 20.0 and fresh == OpenRun(8 + INCIDENT_GAP, 8 + INCIDENT_GAP, 20.0)


def test_late_readings_inside_a_stored_incident_do_not_reopen_it_for_the_readings_after():
    # the stored incident ran from 0 to 100; a batch brings readings late for 10..12 and new
    # ones from 100 + a gap on: all of them continue that incident, none is its onset
    stored = OpenRun(0, 100, 50.0)
    times = np.array([10, 11, 12, 100 + INCIDENT_GAP, 101 + INCIDENT_GAP])
    evidence = np.full(5, 20.0)
    out, run_after = discount(times, evidence, evidence > 4, 1, HORIZON, stored)
    np.testing.assert_allclose(out, 20.0 * HORIZON / (HORIZON + times))
    assert run_after == OpenRun(0, 101 + INCIDENT_GAP, 50.0)


def test_a_run_scored_in_parts_is_habituated_as_in_one_pass():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.integers(1, 30, 400))
    evidence = rng.exponential(5.0, 400).astype(np.float32).astype(float)
    anomalous = evidence > 4
    whole, last = discount(times, evidence, anomalous, 1, HORIZON, None)
    parts, open_run = [], None
    for rows in np.array_split(np.arange(400), 7):
        out, open_run = discount(times[rows], evidence[rows], anomalous[rows], 1, HORIZON, open_run)
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert open_run == last


def test_a_stuck_meter_is_habituated_alike_in_batches_live_cycles_and_one_pass(
        db_url, jobs, role_url):  # noqa: F811 (jobs: the fixture imported above)
    """A meter stuck from the middle of its backfill through its live readings: the batches
    (each carrying the open run to the next), then the live cycles (reading it from
    anomaly_incidents each time) store the scores of one pass over the series; the onset keeps
    its score, one reading holds the top, the stuck readings stay anomalous at lower scores
    down to the threshold, and the incident keeps the model's own peak."""
    _, conn = jobs
    settings = settings_for(role_url("wattwatch_jobs"), detector_batch_rows=1000)
    frame = household(days=6, seed=61)
    history, stuck = 5 * 1440, 6500  # stuck after the training days, across batch boundaries
    frame.iloc[stuck:] = frame.iloc[stuck].to_numpy()
    _add_meter(db_url, "hab", frame.iloc[:history])
    _train(conn, settings, "hab", frame)
    run(conn, settings, DetectorMetrics(CollectorRegistry()), once=True)
    scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
    for start in range(history, history + 30, 3):
        with psycopg.connect(db_url) as owner:
            copy_frame(owner, "hab", frame.iloc[start:start + 3])
        assert scorer.cycle() == 3
    model = registry.load(conn, registry.active_versions(conn, ["hab"])["hab"])
    stored_readings = readings.window(conn, _meter(conn, "hab"), None, None)
    expected = score_series(model.detector, stored_readings[model.fields])
    rows = conn.execute("SELECT score, evidence, is_anomaly, severity FROM anomaly_scores"
                        " WHERE meter_id = 'hab' ORDER BY time").fetchall()
    incident = conn.execute("SELECT start_time, peak_score, peak_evidence FROM anomaly_incidents"
                            " WHERE meter_id = 'hab' ORDER BY start_time DESC LIMIT 1").fetchone()
    conn.commit()
    assert len(rows) == len(expected) == history + 30
    score, evidence = (np.array([row[n] for row in rows], dtype=np.float32) for n in (0, 1))
    np.testing.assert_array_equal(score, expected["score"].to_numpy())
    np.testing.assert_array_equal(evidence, expected["evidence"].to_numpy())
    assert [row[2:] for row in rows] == list(zip(expected["is_anomaly"], expected["severity"]))
    after = expected.iloc[stuck:]
    assert after["is_anomaly"].mean() > 0.95  # still reported
    onset = int(np.argmax(after["is_anomaly"].to_numpy()))
    assert incident[0] == after.index[onset]
    assert (after["score"] < after["raw_score"]).sum() > 0.9 * len(after)
    assert after["score"].iloc[onset] == after["raw_score"].iloc[onset]  # the onset's own
    assert (after["score"] == after["score"].max()).sum() == 1  # no tie at the top
    assert after["score"].iloc[-1] == model.detector.threshold_  # never below the threshold
    assert np.float32(incident[2]) == after["raw_evidence"].max()  # the model's own peak
    assert np.float32(incident[1]) == after["raw_score"].max()
