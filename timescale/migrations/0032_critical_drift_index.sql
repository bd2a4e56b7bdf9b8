-- Critical drift reports are rare: a partial index finds the recent ones without reading every
-- report of the last days (the KPI exporter counts meters in critical drift on every scrape).
CREATE INDEX drift_reports_critical_idx ON drift_reports (run_at DESC) WHERE status = 'critical';
