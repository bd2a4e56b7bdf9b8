"""When `detect run` trains: a meter's first model, retrain requests, models past their age.

Every training holds the meter's advisory lock (`detector.locks`), so two detectors never
train one meter at once (and the schema refuses a second active model anyway). A meter that
cannot be trained yet (too little data) is logged once and tried again with backoff
(`detector.retries`), not at every cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from detector import fleet, readings, registry
from detector.cycles import Work, failure
from detector.locks import MeterLocks
from detector.retries import HeldBack
from wattwatch import logs
from wattwatch.errors import WattwatchError
from wattwatch.settings import Settings

log = logs.get("detector")


class Trainer:
    """With `retrying` false (`run --once`, which reports the meters it could not train at
    the end), a meter that cannot be trained yet is logged at DEBUG only."""

    def __init__(self, settings: Settings, held_back: HeldBack, retrying: bool = True):
        self.settings = settings
        self.held_back = held_back
        self.retrying = retrying

    def initial(self, conn: psycopg.Connection, meters: list[readings.Meter], work: Work,
                failed: Callable[[str, Exception], None]) -> dict[str, int]:
        """The first models of meters the caller holds, trained together (`detector.fleet`),
        by meter. A meter that cannot be trained yet (too little data) is left out, reported
        in `work`, logged once and tried again with backoff; one that fails otherwise is
        left out and `failed` is told."""
        versions, failures = self._together(
            conn, {meter.meter_id: (meter, "initial") for meter in meters},
            self.settings.detector_initial_holdout_days)
        for meter_id in versions:
            self.held_back.succeeded(meter_id)
        for meter_id, exc in failures.items():
            if isinstance(exc, WattwatchError):
                work.failed[meter_id] = str(exc)
                self._not_yet(meter_id, "not scored yet", exc)
            else:
                failed(meter_id, exc)
        return versions

    def retrain(self, conn: psycopg.Connection, locks: MeterLocks, work: Work) -> list[int]:
        """Answer pending retrain requests (all meters for a request without one) and retrain
        models older than detector_model_max_age_days, for the meters this process can hold
        now, all together (`detector.fleet`), each meter once; a request with a meter held
        elsewhere waits for a later cycle. A request is answered with the newest version its
        meters got (none when none could be trained: they keep their models). Returns the
        versions trained."""
        requests = self._claim_requests(conn, locks)
        wanted = {}  # meter id -> (meter, reason)
        for _, meters, why in requests:  # oldest first: a meter asked for twice trains once
            for meter in meters:
                wanted.setdefault(meter.meter_id, (meter, f"retrain request: {why}"))
        old = self._claim_old(conn, locks) if self.settings.detector_model_max_age_days else []
        for meter in old:
            wanted.setdefault(meter.meter_id, (meter, "age"))
        versions, failures = self._together(conn, wanted)
        for meter_id, exc in failures.items():
            if not isinstance(exc, WattwatchError):
                work.failed[meter_id] = failure(log, meter_id, exc)
        for request_id, meters, _ in requests:
            for meter in meters:
                if isinstance(failures.get(meter.meter_id), WattwatchError):
                    log.warning("retrain request %d: meter %s keeps its model: %s", request_id,
                                meter.meter_id, failures[meter.meter_id])
            version = max((versions[m.meter_id] for m in meters if m.meter_id in versions),
                          default=None)
            conn.execute("UPDATE retrain_requests SET handled_at = now(), model_version = %s"
                         " WHERE request_id = %s", (version, request_id))
        for meter in old:
            key = ("age", meter.meter_id)
            if meter.meter_id in versions:
                self.held_back.succeeded(key)
            elif isinstance(failures.get(meter.meter_id), WattwatchError):
                self._not_yet(key, "keeps its model past its age", failures[meter.meter_id])
        return sorted(versions.values())

    def _together(self, conn: psycopg.Connection,
                  wanted: dict[str, tuple[readings.Meter, str]], holdout_days: float = 0
                  ) -> tuple[dict[str, int], dict[str, Exception]]:
        """Train the wanted meters together (`detector.fleet`) and store each model, with its
        reason, as soon as it is fitted: the versions stored and the meters that failed (with
        why), by meter."""
        versions: dict[str, int] = {}
        if not wanted:
            return versions, {}

        def keep(meter: readings.Meter, fitted: registry.Fitted) -> None:
            reason = wanted[meter.meter_id][1]
            with conn.transaction():  # a savepoint: a failure leaves the other meters' work
                version = versions[meter.meter_id] = registry.store(conn, fitted, reason)
            log.info("meter %s: model version %d trained (%s)", meter.meter_id, version, reason)

        failures = fleet.train_many(conn, [meter for meter, _ in wanted.values()],
                                    self.settings, keep, holdout_days=holdout_days)
        return versions, failures

    @staticmethod
    def _claim_requests(conn: psycopg.Connection, locks: MeterLocks
                        ) -> list[tuple[int, list[readings.Meter], str]]:
        """The pending retrain requests whose meters this process now holds, each held until
        the transaction ends (another detector skips it): (request, its meters, why)."""
        claimed = []
        pending = conn.execute("SELECT request_id, meter_id, reason FROM retrain_requests"
                               " WHERE handled_at IS NULL ORDER BY requested_at").fetchall()
        for request_id, meter_id, why in pending:
            meters = readings.meters(conn, meter_id)
            ids = {meter.meter_id for meter in meters}
            if locks.claim(ids) != ids or not conn.execute(
                    "SELECT true FROM retrain_requests WHERE request_id = %s"
                    " AND handled_at IS NULL FOR UPDATE SKIP LOCKED", (request_id,)).fetchone():
                continue  # another detector holds a meter, or answered the request meanwhile
            claimed.append((request_id, meters, why))
        return claimed

    def _claim_old(self, conn: psycopg.Connection, locks: MeterLocks) -> list[readings.Meter]:
        """The meters whose models are past their age, due (not held back) and now held."""
        old = """SELECT meter_id FROM models WHERE status = 'active' AND meter_id IS NOT NULL
                 AND trained_at < now() - %s * interval '1 day'"""
        days = self.settings.detector_model_max_age_days
        due = [meter_id for (meter_id,) in conn.execute(old, (days,)).fetchall()
               if self.held_back.due(("age", meter_id))]
        if not due:
            return []
        claimed = sorted(locks.claim(due))
        # read again once held: another detector may have retrained one meanwhile
        still = {meter_id for (meter_id,) in conn.execute(
            old + " AND meter_id = ANY(%s)", (days, claimed)).fetchall()}
        return [meter for meter in readings.meters(conn) if meter.meter_id in still]

    def _not_yet(self, key, what: str, exc: WattwatchError) -> None:
        """Log a meter that cannot be trained yet: the first time at INFO, then at DEBUG."""
        first, delay = self.held_back.failed(key)
        (log.info if first and self.retrying else log.debug)(
            "%s; %s, trying again in %.0f s and then less often", exc, what, delay)
