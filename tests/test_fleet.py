"""Workers sharing the meters of one database: rendezvous hashing, and seats on the real
server (advisory locks seen through pg_locks, the workers table, keepalives)."""

from __future__ import annotations

import logging
import time

import psycopg
from prometheus_client import CollectorRegistry

from tests.conftest import settings_for
from timescale.fleet import Fleet
from timescale.rendezvous import Share, owner

LOG = logging.getLogger("test-fleet")


def test_rendezvous_balances_and_moves_only_the_meters_of_a_worker_that_comes_or_goes():
    meters = [f"m{n}" for n in range(3000)]
    three = {meter: owner(meter, ["w1", "w2", "w3"]) for meter in meters}
    for worker in ("w1", "w2", "w3"):
        assert 900 < list(three.values()).count(worker) < 1100, worker
    two = {meter: owner(meter, ["w3", "w1"]) for meter in meters}  # w2 gone; order is no matter
    assert {meter for meter in meters if two[meter] != three[meter]} == \
        {meter for meter in meters if three[meter] == "w2"}
    four = {meter: owner(meter, ["w1", "w2", "w3", "w4"]) for meter in meters}
    moved = {meter for meter in meters if four[meter] != three[meter]}
    assert {four[meter] for meter in moved} == {"w4"} and 600 < len(moved) < 900
    assert owner("m1", []) is None
    share = Share("w1")
    assert share.update(["w1"], ["a", "b"]) == ({"a", "b"}, set())
    gained, lost = share.update(["w1", "w2"], ["a", "b", "c"])
    assert share.mine() == {m for m in "abc" if owner(m, ["w1", "w2"]) == "w1"}
    assert gained == share.mine() - {"a", "b"} and lost == {"a", "b"} - share.mine()


def fleet(url: str, worker: str) -> tuple[Fleet, CollectorRegistry]:
    registry = CollectorRegistry()
    return Fleet(settings_for(url, worker_id=worker), "detector", LOG, registry), registry


def test_live_workers_share_the_meters_and_a_dead_ones_meters_go_to_the_others(
        db_url, role_url, caplog):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO meters (meter_id) SELECT 'fl' || n FROM generate_series(1, 40) n")
    meters = {f"fl{n}" for n in range(1, 41)}
    jobs = role_url("wattwatch_jobs")
    (first, first_metrics), (second, second_metrics) = fleet(jobs, "a"), fleet(jobs, "b")
    try:
        with caplog.at_level(logging.INFO, "test-fleet"):
            assert first.refresh()[0] >= meters and first.mine() >= meters  # alone: every meter
            second.refresh()
            first.refresh()
        assert first.mine() | second.mine() >= meters and not first.mine() & second.mine()
        assert first.mine() & meters == {m for m in meters if owner(m, ["a", "b"]) == "a"}
        assert "2 live detector worker(s): a, b; this one (a) holds" in caplog.text
        assert first_metrics.get_sample_value("wattwatch_detector_workers") == 2
        held = first_metrics.get_sample_value("wattwatch_detector_worker_meters", {"worker": "a"})
        assert held == len(first.mine())
        # the server drops a vanished machine's session after a few keepalive probes
        assert first.conn.execute("SHOW tcp_keepalives_idle").fetchone()[0] == "5"
        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT worker_id, meters FROM live_workers"
                                " WHERE service = 'detector' ORDER BY 1").fetchall()
        assert rows == [("a", len(first.mine())), ("b", len(second.mine()))]

        twin, _ = fleet(jobs, "b")  # a worker id already held: no meters, one warning
        with caplog.at_level(logging.WARNING, "test-fleet"):
            assert twin.refresh() == (set(), set()) and twin.mine() == set()
        assert "worker id 'b' is held by a live session" in caplog.text

        theirs = second.mine()
        second.conn.close()  # the worker dies: its lock goes with its connection
        deadline = time.monotonic() + 10  # once the server has ended the session
        while (gained := first.refresh()[0]) != theirs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gained == theirs and first.mine() >= meters
        with psycopg.connect(db_url) as conn:  # the dead worker's row is forgotten
            assert conn.execute("SELECT worker_id FROM workers WHERE service = 'detector'"
                                ).fetchall() == [("a",)]
        assert twin.refresh()[0] == theirs  # the seat is free: b's meters go back to it
        assert first.refresh()[1] == theirs
        twin.close()  # leaves: its row goes, and its meters at the others' next look
        assert first.refresh()[0] == theirs
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT worker_id FROM workers WHERE service = 'detector'"
                                ).fetchall() == [("a",)]
    finally:
        first.close()
        second.close()
