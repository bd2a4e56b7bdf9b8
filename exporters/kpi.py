"""The KPI exporter: facts stored in TimescaleDB, read fresh on every scrape, as Prometheus metrics.

A custom collector (no state kept between scrapes except a cache of closed days' totals): each
scrape runs a few small queries as the read-only role against the rollups (readings_hourly,
readings_daily), the anomaly index and the drift reports, never a scan of raw readings.

    wattwatch_readings_stored 2075259.0
    wattwatch_meter_readings_24h{meter_id="sim-0000"} 1440.0
    wattwatch_anomalies_24h{severity="critical"} 3.0
    wattwatch_active_power_24h_average_watts 1089.2
    wattwatch_voltage_24h_average_volts 240.8
    wattwatch_meter_active_power_watts{meter_id="sim-0000"} 412.0
    wattwatch_meter_last_reading_age_seconds{meter_id="sim-0000"} 41.0
    wattwatch_meters 10.0
    wattwatch_meters_critical_drift 1.0
    wattwatch_job_last_activity_age_seconds{job="detector"} 2.1
    wattwatch_job_last_activity_age_seconds{job="drift"} 3605.0
    wattwatch_workers{service="detector"} 2.0
    wattwatch_worker_meters{service="detector",worker="host-a-1"} 5.0
    wattwatch_exporter_scrape_duration_seconds 0.012
    wattwatch_exporter_scrape_errors_total 0.0
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from timescale.reconnect import Outage
from wattwatch import logs
from wattwatch.errors import WattwatchError
from wattwatch.vocabulary import ANOMALY_SEVERITIES

log = logs.get("export")

# Days older than this are closed: their daily rollup rows no longer change (except on a backfill,
# which the cache's lifetime bounds), so their total is cached instead of summed on every scrape.
OPEN_DAYS = 2
CLOSED_TOTAL_SECONDS = 600.0

LIVE_WORKERS = "SELECT service, worker_id, meters FROM live_workers ORDER BY 1, 2"
PER_METER_24H = """
SELECT meter_id, sum(n_readings)::bigint FROM readings_hourly WHERE bucket >= now() - interval '24 hours'
GROUP BY meter_id"""
AVERAGES_24H = """
SELECT sum(active_power_kw_avg * n_readings) / nullif(sum(n_readings) FILTER (WHERE active_power_kw_avg IS NOT NULL), 0),
       sum(voltage_v_avg * n_readings) / nullif(sum(n_readings) FILTER (WHERE voltage_v_avg IS NOT NULL), 0)
FROM readings_hourly WHERE bucket >= now() - interval '24 hours'"""
# The newest raw reading of each meter within the last day (chunk exclusion keeps this to one or
# two chunks); a meter silent for longer falls back to the end of its newest hourly bucket.
LAST_READING = """
SELECT m.meter_id, coalesce(r.time, h.bucket + interval '1 hour'), h.active_power_kw_avg
FROM meters m
LEFT JOIN LATERAL (SELECT time FROM readings WHERE meter_id = m.meter_id
                   AND time > now() - interval '1 day' ORDER BY time DESC LIMIT 1) r ON true
LEFT JOIN LATERAL (SELECT bucket, active_power_kw_avg FROM readings_hourly
                   WHERE meter_id = m.meter_id ORDER BY bucket DESC LIMIT 1) h ON true"""
ANOMALIES_24H = """
SELECT severity, count(*) FROM anomaly_scores
WHERE is_anomaly AND time >= now() - interval '24 hours' GROUP BY severity"""
# A meter is in critical drift when a feature's latest report (of the last 8 days, so a weekly
# full run always counts) is critical: the few recent critical reports that no later report of
# the same meter and feature replaced (partial index of migration 0032).
CRITICAL_DRIFT = """
SELECT count(DISTINCT c.meter_id) FROM drift_reports c
WHERE c.status = 'critical' AND c.run_at >= now() - interval '8 days'
  AND NOT EXISTS (SELECT 1 FROM drift_reports n WHERE n.meter_id = c.meter_id
                  AND n.feature = c.feature AND n.run_at > c.run_at)"""
JOB_ACTIVITY = """
SELECT (SELECT max(updated_at) FROM detector_watermarks),
       (SELECT max(run_at) FROM drift_reports WHERE run_at >= now() - interval '8 days')"""
TOTAL_SINCE = "SELECT coalesce(sum(n_readings), 0)::bigint FROM readings_daily WHERE bucket >= %s"
TOTAL_BEFORE = "SELECT coalesce(sum(n_readings), 0)::bigint FROM readings_daily WHERE bucket < %s"


@dataclass
class _ClosedTotal:
    cutoff: datetime | None = None
    value: int = 0
    expires: float = 0.0


class KpiCollector(Collector):
    """Yields the KPI metric families on each collect(); registers itself with `registry`.

    `connect` opens a connection (as the read-only role); it is reopened after any failure. A
    failed scrape still yields the exporter's own duration and error counter.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], registry: CollectorRegistry):
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # the HTTP server scrapes from several threads
        self._errors = 0
        self._outage = Outage(log, "scrapes read it again")
        self._closed = _ClosedTotal()
        registry.register(self)

    def describe(self) -> list[Metric]:
        return []  # families depend on the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            started = time.perf_counter()
            try:
                families = self._read()
            except (psycopg.Error, OSError, WattwatchError) as exc:
                self._errors += 1
                self._outage.lost(exc)  # one line per outage, not one per scrape
                self._close()
                families = []
            else:
                self._outage.over()
                log.debug("scrape read %d metric families in %.3f s", len(families),
                          time.perf_counter() - started)
            duration = GaugeMetricFamily("wattwatch_exporter_scrape_duration_seconds",
                                         "Time the last scrape took to read the database")
            duration.add_metric([], time.perf_counter() - started)
            errors = CounterMetricFamily("wattwatch_exporter_scrape_errors",
                                         "Scrapes that could not read the database")
            errors.add_metric([], self._errors)
        yield from families
        yield duration
        yield errors

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read(self) -> list[Metric]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._conn.autocommit = True
        conn = self._conn
        now = datetime.now(timezone.utc)
        return [self._total(conn, now), *self._per_meter(conn, now), *self._averages(conn),
                self._anomalies(conn), self._critical_drift(conn), self._jobs(conn, now),
                *self._workers(conn)]

    def _total(self, conn, now: datetime) -> Metric:
        cutoff = datetime(now.year, now.month, now.day, tzinfo=timezone.utc) - timedelta(days=OPEN_DAYS)
        closed = self._closed
        if closed.cutoff != cutoff or time.monotonic() >= closed.expires:
            closed.value = conn.execute(TOTAL_BEFORE, (cutoff,)).fetchone()[0]
            closed.cutoff, closed.expires = cutoff, time.monotonic() + CLOSED_TOTAL_SECONDS
        recent = conn.execute(TOTAL_SINCE, (cutoff,)).fetchone()[0]
        total = GaugeMetricFamily("wattwatch_readings_stored",
                                  "Readings stored, all meters (from the daily rollup)")
        total.add_metric([], closed.value + recent)
        return total

    def _per_meter(self, conn, now: datetime) -> list[Metric]:
        readings = GaugeMetricFamily("wattwatch_meter_readings_24h",
                                     "Readings stored per meter over the last 24 hours",
                                     labels=["meter_id"])
        for meter, count in conn.execute(PER_METER_24H):
            readings.add_metric([meter], count)
        load = GaugeMetricFamily("wattwatch_meter_active_power_watts",
                                 "Current load: mean active power of the meter's newest hour",
                                 labels=["meter_id"])
        age = GaugeMetricFamily("wattwatch_meter_last_reading_age_seconds",
                                "Seconds since the meter's newest reading", labels=["meter_id"])
        meters = 0
        for meter, last, power_kw in conn.execute(LAST_READING):
            meters += 1
            if last is not None:
                age.add_metric([meter], max(0.0, (now - last).total_seconds()))
            if power_kw is not None:
                load.add_metric([meter], power_kw * 1000)
        count = GaugeMetricFamily("wattwatch_meters", "Meters registered")
        count.add_metric([], meters)
        return [readings, load, age, count]

    def _averages(self, conn) -> list[Metric]:
        power_kw, voltage = conn.execute(AVERAGES_24H).fetchone()
        power = GaugeMetricFamily("wattwatch_active_power_24h_average_watts",
                                  "Mean active power over all meters' readings of the last 24 hours")
        volts = GaugeMetricFamily("wattwatch_voltage_24h_average_volts",
                                  "Mean voltage over all meters' readings of the last 24 hours")
        if power_kw is not None:
            power.add_metric([], power_kw * 1000)
        if voltage is not None:
            volts.add_metric([], voltage)
        return [power, volts]

    def _anomalies(self, conn) -> Metric:
        counts = dict(conn.execute(ANOMALIES_24H).fetchall())
        family = GaugeMetricFamily("wattwatch_anomalies_24h",
                                   "Anomalous readings scored in the last 24 hours, by severity",
                                   labels=["severity"])
        for severity in ANOMALY_SEVERITIES:  # every severity, so a zero is a zero and not an absence
            family.add_metric([severity], counts.get(severity, 0))
        return family

    def _critical_drift(self, conn) -> Metric:
        family = GaugeMetricFamily("wattwatch_meters_critical_drift",
                                   "Meters whose latest drift report has a critical feature")
        family.add_metric([], conn.execute(CRITICAL_DRIFT).fetchone()[0])
        return family

    def _workers(self, conn) -> list[Metric]:
        """The live workers of each service and the meters each held at its last look: the
        whole fleet, whichever replica Prometheus scrapes."""
        count = GaugeMetricFamily("wattwatch_workers", "Live workers sharing the meters, by service",
                                  labels=["service"])
        held = GaugeMetricFamily("wattwatch_worker_meters",
                                 "Meters each live worker held at its last look",
                                 labels=["service", "worker"])
        live = {"detector": 0, "drift": 0}
        for service, worker, meters in conn.execute(LIVE_WORKERS):
            live[service] += 1
            held.add_metric([service, worker], meters)
        for service, workers in live.items():
            count.add_metric([service], workers)
        return [count, held]

    def _jobs(self, conn, now: datetime) -> Metric:
        detector, drift = conn.execute(JOB_ACTIVITY).fetchone()
        family = GaugeMetricFamily("wattwatch_job_last_activity_age_seconds",
                                   "Seconds since the job last wrote to the database (detector: "
                                   "a watermark moved; drift: a run stored)", labels=["job"])
        for job, last in (("detector", detector), ("drift", drift)):
            if last is not None:
                family.add_metric([job], max(0.0, (now - last).total_seconds()))
        return family
