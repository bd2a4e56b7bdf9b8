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
        versions = {}

        def keep(meter: readings.Meter, fitted: registry.Fitted) -> None:
            with conn.transaction():
                version = versions[meter.meter_id] = registry.store(conn, fitted, "initial")
            self.held_back.succeeded(meter.meter_id)
            log.info("meter %s: model version %d trained (initial)", meter.meter_id, version)

        for meter_id, exc in fleet.train_many(
                conn, meters, self.settings, keep,
                holdout_days=self.settings.detector_initial_holdout_days).items():
            if isinstance(exc, WattwatchError):
                work.failed[meter_id] = str(exc)
                self._not_yet(meter_id, "not scored yet", exc)
            else:
                failed(meter_id, exc)
        return versions

    def retrain(self, conn: psycopg.Connection, locks: MeterLocks, work: Work) -> list[int]:
        """Answer pending retrain requests (all meters for a request without one) and retrain
        models older than detector_model_max_age_days, for the meters this process can hold
        now; a request with a meter held elsewhere waits for a later cycle. Returns the
        versions trained."""
        trained = []
        pending = conn.execute("SELECT request_id, meter_id, reason FROM retrain_requests"
                               " WHERE handled_at IS NULL ORDER BY requested_at").fetchall()
        for request_id, meter_id, why in pending:
            meters = readings.meters(conn, meter_id)
            ids = {meter.meter_id for meter in meters}
            if locks.claim(ids) != ids or not conn.execute(
                    "SELECT true FROM retrain_requests WHERE request_id = %s"
                    " AND handled_at IS NULL FOR UPDATE SKIP LOCKED", (request_id,)).fetchone():
                continue  # another detector holds a meter, or answered the request meanwhile
            version = None
            for meter in meters:
                try:
                    version = self._train(conn, meter, f"retrain request: {why}", work)
                except WattwatchError as exc:
                    log.warning("retrain request %d: meter %s keeps its model: %s", request_id,
                                meter.meter_id, exc)
                trained += [version] if version else []
            conn.execute("UPDATE retrain_requests SET handled_at = now(), model_version = %s"
                         " WHERE request_id = %s", (version, request_id))
        if self.settings.detector_model_max_age_days:
            trained += self._retrain_old(conn, locks, work)
        return trained

    def _retrain_old(self, conn: psycopg.Connection, locks: MeterLocks, work: Work) -> list[int]:
        old = """SELECT meter_id FROM models WHERE status = 'active' AND meter_id IS NOT NULL
                 AND trained_at < now() - %s * interval '1 day'"""
        days = self.settings.detector_model_max_age_days
        due = [meter_id for (meter_id,) in conn.execute(old, (days,)).fetchall()
               if self.held_back.due(("age", meter_id))]
        if not due:
            return []
        claimed = sorted(locks.claim(due))
        # read again once held: another detector may have retrained one meanwhile
        still = [meter_id for (meter_id,) in conn.execute(
            old + " AND meter_id = ANY(%s)", (days, claimed)).fetchall()]
        trained = []
        for meter in readings.meters(conn):
            if meter.meter_id in still:
                key = ("age", meter.meter_id)
                try:
                    version = self._train(conn, meter, "age", work)
                except WattwatchError as exc:
                    self._not_yet(key, "keeps its model past its age", exc)
                    continue
                self.held_back.succeeded(key)
                trained += [version] if version else []
        return trained

    def _train(self, conn: psycopg.Connection, meter: readings.Meter, reason: str,
               work: Work) -> int | None:
        """A new version for a meter that has a model; WattwatchError when it has too little
        data (it keeps its model); None after an unexpected error, logged and reported."""
        try:
            with conn.transaction():  # a savepoint: a failure leaves the other meters' work
                version = registry.train(conn, meter, self.settings, reason=reason)
        except (WattwatchError, psycopg.OperationalError):
            raise
        except Exception as exc:  # noqa: BLE001 - one meter's failure, reported and skipped
            work.failed[meter.meter_id] = failure(log, meter.meter_id, exc)
            return None
        log.info("meter %s: model version %d trained (%s)", meter.meter_id, version, reason)
        return version

    def _not_yet(self, key, what: str, exc: WattwatchError) -> None:
        """Log a meter that cannot be trained yet: the first time at INFO, then at DEBUG."""
        first, delay = self.held_back.failed(key)
        (log.info if first and self.retrying else log.debug)(
            "%s; %s, trying again in %.0f s and then less often", exc, what, delay)
