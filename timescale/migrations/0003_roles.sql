-- Roles: a read-only role for Grafana and the exporter, a writer for ingest, a writer for the
-- detector and drift jobs. They are created NOLOGIN; `wattwatch db migrate` gives a role LOGIN
-- and its password only when WATTWATCH_<ROLE>_PASSWORD is set, so no password is ever in SQL.
-- Roles are cluster-wide and may already exist (another database on the same server).
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['wattwatch_reader', 'wattwatch_ingest', 'wattwatch_jobs'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END
$$;
COMMENT ON ROLE wattwatch_reader IS 'Read-only: Grafana and the KPI exporter';
COMMENT ON ROLE wattwatch_ingest IS 'Writes readings, meters, rejects and injected labels';
COMMENT ON ROLE wattwatch_jobs IS 'Detector and drift jobs: read readings, write scores, incidents, models, drift reports';

-- Nobody but the owner creates objects (PostgreSQL before 15 let PUBLIC create in public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO wattwatch_reader, wattwatch_ingest, wattwatch_jobs;

GRANT SELECT ON meters, readings, anomaly_scores,
    anomaly_incidents, retrain_requests, drift_reports, ingest_rejects, injected_anomalies
    TO wattwatch_reader;
-- Dashboards show the registry but never need the serialised model.
GRANT SELECT (version, meter_id, algorithm, parameters, train_from, train_to, threshold,
    metrics, status, reason, trained_at) ON models TO wattwatch_reader;

GRANT SELECT, INSERT ON meters, readings, ingest_rejects, injected_anomalies TO wattwatch_ingest;

GRANT SELECT ON meters, readings, injected_anomalies TO wattwatch_jobs;
-- Scores and drift reports are append-only: no UPDATE or DELETE, so a score is never rewritten.
GRANT SELECT, INSERT ON anomaly_scores, drift_reports TO wattwatch_jobs;
GRANT SELECT, INSERT, UPDATE ON models, anomaly_incidents, retrain_requests TO wattwatch_jobs;

-- Every service reads which license mode the schema was built in (timescale/migrate.py).
GRANT SELECT ON wattwatch_migrations TO wattwatch_reader, wattwatch_ingest, wattwatch_jobs;
