"""Many meters trained together (`detector.fleet`) against the real TimescaleDB: the models
`registry.train` gives one meter at a time, on a pool of processes; a meter with too little
data named and the others trained; and a detector with a bounded model cache scoring every
meter as an unbounded one does."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from detector import fleet, registry
from detector.metrics import DetectorMetrics
from detector.readings import meters
from detector.service import Scorer
from tests.conftest import settings_for
from tests.support.readings import copy_frame
from tests.test_detector_synthetic import household
from wattwatch.errors import WattwatchError

SEEDS = {"f1": 51, "f2": 52, "f3": 53}


@pytest.fixture(scope="module")
def fleet_db(db_url, role_url):
    """Three meters with five days each and one with an hour; settings as the jobs role."""
    frames = {meter_id: household(days=5, seed=seed) for meter_id, seed in SEEDS.items()}
    frames["short"] = household(days=1, seed=54).iloc[:60]
    with psycopg.connect(db_url) as conn:
        for meter_id, frame in frames.items():
            conn.execute("INSERT INTO meters (meter_id, timezone) VALUES (%s, 'Europe/Paris')",
                         (meter_id,))
            copy_frame(conn, meter_id, frame)
    url = role_url("wattwatch_jobs")
    return frames, url


def _stored(conn, version):
    return registry.load(conn, version).detector


def test_meters_trained_together_on_processes_get_the_models_trained_one_at_a_time(fleet_db):
    frames, url = fleet_db
    settings = settings_for(url, detector_train_processes=2)
    with psycopg.connect(url) as conn:
        every = meters(conn)
        fitted = {}
        failed = fleet.train_many(conn, every, settings,
                                  lambda meter, model: fitted.setdefault(meter.meter_id, model))
        assert sorted(fitted) == sorted(SEEDS)
        assert isinstance(failed.pop("short"), WattwatchError) and not failed
        for meter in every:
            if meter.meter_id == "short":
                continue
            with conn.transaction():
                version = registry.train(conn, meter, settings, reason="one at a time")
            alone = _stored(conn, version)
            together = fitted[meter.meter_id]
            # the same windows, thresholds, tails and trees, and the same scores
            assert (together.train_from, together.train_to, together.detector.threshold_) == \
                conn.execute("SELECT train_from, train_to, threshold FROM models"
                             " WHERE version = %s", (version,)).fetchone()
            np.testing.assert_array_equal(together.detector.calibration_.beta_,
                                          alone.calibration_.beta_)
            np.testing.assert_array_equal(together.detector.forest_.split,
                                          alone.forest_.split)
            assert together.metrics == conn.execute(
                "SELECT metrics FROM models WHERE version = %s", (version,)).fetchone()[0]
            frame = frames[meter.meter_id][together.fields]
            np.testing.assert_array_equal(together.detector.score(frame)["score"],
                                          alone.score(frame)["score"])
        conn.rollback()


def test_a_bounded_model_cache_scores_every_meter_and_keeps_its_bound(fleet_db):
    """Two models kept at most, three meters to score: each cycle loads what it needs, drops
    the models of the meters scored longest ago, and every reading is scored once."""
    frames, url = fleet_db
    settings = settings_for(url, detector_model_cache_meters=2)
    with psycopg.connect(url) as conn:
        scorer = Scorer(conn, settings, DetectorMetrics(CollectorRegistry()))
        scorer.cycle()
        assert len(scorer.cache.models) <= 3  # this cycle's meters, never dropped while used
        assert sum(len(members) for members in scorer.cache.stacked.members.values()) == \
            len(scorer.cache.models)
        scorer.cycle()
        assert len(scorer.cache.models) <= 2 and set(scorer.cache.layouts) == \
            set(scorer.cache.models)
        counts = dict(conn.execute("SELECT meter_id, count(*) FROM anomaly_scores"
                                   " GROUP BY meter_id").fetchall())
        conn.commit()
        scorer.close()
    assert {meter_id: counts.get(meter_id) for meter_id in SEEDS} == \
        {meter_id: len(frames[meter_id]) for meter_id in SEEDS}


def test_retrain_requests_and_old_models_train_together_each_meter_once(
        fleet_db, db_url, monkeypatch):
    """Four retrain requests (one meter asked for twice, one meter with too little data) and a
    model past its age: one batch of the four meters, each trained once, every request
    answered with its meter's new version (none for the meter that keeps what it has)."""
    frames, url = fleet_db
    settings = settings_for(url, detector_model_max_age_days=7)
    with psycopg.connect(url) as conn:
        Scorer(conn, settings, DetectorMetrics(CollectorRegistry())).cycle()  # first models
        models_before = dict(conn.execute("SELECT meter_id, count(*) FROM models"
                                          " GROUP BY meter_id").fetchall())
        conn.commit()
    assert sorted(models_before) == sorted(SEEDS)
    with psycopg.connect(db_url) as owner:
        owner.execute("UPDATE models SET trained_at = trained_at - interval '30 days'"
                      " WHERE meter_id = 'f3'")
        owner.execute("INSERT INTO retrain_requests (meter_id, reason, requested_by) VALUES"
                      " ('f1', 'drift on voltage_v', 'drift'), ('f2', 'drift on power', 'drift'),"
                      " ('f1', 'drift again', 'drift'), ('short', 'drift', 'drift')")
    batches = []
    train_many = fleet.train_many

    def spy(conn, meters, *args, **kwargs):  # the real training, its batches recorded
        batches.append(sorted(meter.meter_id for meter in meters))
        return train_many(conn, meters, *args, **kwargs)

    monkeypatch.setattr(fleet, "train_many", spy)
    with psycopg.connect(url) as conn:
        Scorer(conn, settings, DetectorMetrics(CollectorRegistry())).cycle()
        active = {meter_id: (version, reason) for meter_id, version, reason in conn.execute(
            "SELECT meter_id, version, reason FROM models WHERE status = 'active'").fetchall()}
        models_after = dict(conn.execute("SELECT meter_id, count(*) FROM models"
                                         " GROUP BY meter_id").fetchall())
        answered = conn.execute("SELECT meter_id, handled_at IS NOT NULL, model_version"
                                " FROM retrain_requests ORDER BY request_id").fetchall()
        conn.commit()
    assert batches[0] == ["f1", "f2", "f3", "short"]
    assert all("f1" not in batch and "f3" not in batch for batch in batches[1:])
    assert {meter_id: models_after[meter_id] - count for meter_id, count in
            models_before.items()} == {"f1": 1, "f2": 1, "f3": 1}
    assert {meter_id: reason for meter_id, (_, reason) in active.items()} == {
        "f1": "retrain request: drift on voltage_v", "f2": "retrain request: drift on power",
        "f3": "age"}
    assert answered == [("f1", True, active["f1"][0]), ("f2", True, active["f2"][0]),
                        ("f1", True, active["f1"][0]), ("short", True, None)]
