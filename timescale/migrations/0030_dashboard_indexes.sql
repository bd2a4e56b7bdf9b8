-- Indexes the KPI exporter and the dashboards need: the latest drift run across meters, and
-- incidents by meter (the anomalies dashboard filters and ranks them per meter).
CREATE INDEX drift_reports_run_at_idx ON drift_reports (run_at DESC);
CREATE INDEX anomaly_incidents_meter_time_idx ON anomaly_incidents (meter_id, start_time DESC);
