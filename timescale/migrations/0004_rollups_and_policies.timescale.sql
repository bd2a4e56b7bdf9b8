-- Rollups and storage policies, community ('timescale') license: continuous aggregates with
-- real-time aggregation, refresh policies, compression segmented by meter, retention by age.
-- Ages come from WATTWATCH_* settings that the migration runner passes with set_config().

CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(INTERVAL '1 hour', time) AS bucket,
    meter_id,
    count(*)                 AS n_readings,
    avg(active_power_kw)     AS active_power_kw_avg,
    min(active_power_kw)     AS active_power_kw_min,
    max(active_power_kw)     AS active_power_kw_max,
    avg(reactive_power_kw)   AS reactive_power_kw_avg,
    avg(voltage_v)           AS voltage_v_avg,
    min(voltage_v)           AS voltage_v_min,
    max(voltage_v)           AS voltage_v_max,
    avg(current_a)           AS current_a_avg,
    max(current_a)           AS current_a_max,
    sum(sub_metering_1_wh)   AS sub_metering_1_wh_sum,
    sum(sub_metering_2_wh)   AS sub_metering_2_wh_sum,
    sum(sub_metering_3_wh)   AS sub_metering_3_wh_sum
FROM readings
GROUP BY bucket, meter_id
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(INTERVAL '1 day', time) AS bucket,
    meter_id,
    count(*)                 AS n_readings,
    avg(active_power_kw)     AS active_power_kw_avg,
    min(active_power_kw)     AS active_power_kw_min,
    max(active_power_kw)     AS active_power_kw_max,
    avg(reactive_power_kw)   AS reactive_power_kw_avg,
    avg(voltage_v)           AS voltage_v_avg,
    min(voltage_v)           AS voltage_v_min,
    max(voltage_v)           AS voltage_v_max,
    avg(current_a)           AS current_a_avg,
    max(current_a)           AS current_a_max,
    sum(sub_metering_1_wh)   AS sub_metering_1_wh_sum,
    sum(sub_metering_2_wh)   AS sub_metering_2_wh_sum,
    sum(sub_metering_3_wh)   AS sub_metering_3_wh_sum
FROM readings
GROUP BY bucket, meter_id
WITH NO DATA;

-- start_offset NULL: every invalidated bucket is recomputed, so a backfilled history appears too.
SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
SELECT add_continuous_aggregate_policy('readings_daily',
    start_offset => NULL, end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour');

ALTER TABLE readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE anomaly_scores SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id', timescaledb.compress_orderby = 'time DESC, model_version');

DO $$
DECLARE
    compress_days integer := current_setting('wattwatch.compress_after_days')::integer;
    readings_days integer := current_setting('wattwatch.readings_retention_days')::integer;
    scores_days   integer := current_setting('wattwatch.scores_retention_days')::integer;
BEGIN
    IF compress_days > 0 THEN
        PERFORM add_compression_policy('readings', make_interval(days => compress_days));
        PERFORM add_compression_policy('anomaly_scores', make_interval(days => compress_days));
    END IF;
    IF readings_days > 0 THEN
        PERFORM add_retention_policy('readings', make_interval(days => readings_days));
    END IF;
    IF scores_days > 0 THEN
        PERFORM add_retention_policy('anomaly_scores', make_interval(days => scores_days));
    END IF;
END
$$;

COMMENT ON VIEW readings_hourly IS 'Hourly rollup of readings per meter';
COMMENT ON VIEW readings_daily IS 'Daily rollup of readings per meter, UTC days';

GRANT SELECT ON readings_hourly, readings_daily TO wattwatch_reader, wattwatch_jobs;
