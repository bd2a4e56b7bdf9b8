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
