-- Rollups, Apache license: continuous aggregates and policies do not exist here, so the rollups
-- are tables with the same columns, kept current by refresh_readings_rollups() (called by ingest
-- after each load and by `wattwatch db maintain`). Dashboards read them instead of raw readings.
-- Compression is not available; retention is applied by `wattwatch db maintain` with drop_chunks.

CREATE TABLE readings_hourly (
    bucket                 timestamptz NOT NULL,
    meter_id               text NOT NULL,
    n_readings             bigint NOT NULL,
    active_power_kw_avg    double precision,
    active_power_kw_min    double precision,
    active_power_kw_max    double precision,
    reactive_power_kw_avg  double precision,
    voltage_v_avg          double precision,
    voltage_v_min          double precision,
    voltage_v_max          double precision,
    current_a_avg          double precision,
    current_a_max          double precision,
    sub_metering_1_wh_sum  double precision,
    sub_metering_2_wh_sum  double precision,
    sub_metering_3_wh_sum  double precision,
    PRIMARY KEY (meter_id, bucket)
);
CREATE INDEX readings_hourly_bucket_idx ON readings_hourly (bucket);

CREATE TABLE readings_daily (
    bucket                 timestamptz NOT NULL,
    meter_id               text NOT NULL,
    n_readings             bigint NOT NULL,
    active_power_kw_avg    double precision,
    active_power_kw_min    double precision,
    active_power_kw_max    double precision,
    reactive_power_kw_avg  double precision,
    voltage_v_avg          double precision,
    voltage_v_min          double precision,
    voltage_v_max          double precision,
    current_a_avg          double precision,
    current_a_max          double precision,
    sub_metering_1_wh_sum  double precision,
    sub_metering_2_wh_sum  double precision,
    sub_metering_3_wh_sum  double precision,
    PRIMARY KEY (meter_id, bucket)
);
CREATE INDEX readings_daily_bucket_idx ON readings_daily (bucket);

CREATE FUNCTION refresh_readings_rollups(window_start timestamptz, window_end timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    hour_start timestamptz := time_bucket(INTERVAL '1 hour', window_start);
    hour_end   timestamptz := time_bucket(INTERVAL '1 hour', window_end) + INTERVAL '1 hour';
    day_start  timestamptz := time_bucket(INTERVAL '1 day', window_start);
    day_end    timestamptz := time_bucket(INTERVAL '1 day', window_end) + INTERVAL '1 day';
    written    integer;
    more       integer;
BEGIN
    IF window_end < window_start THEN
        RAISE EXCEPTION 'refresh_readings_rollups: window_end % is before window_start %', window_end, window_start;
    END IF;
    -- One refresher at a time, so two loads never race on the same buckets.
    PERFORM pg_advisory_xact_lock(hashtext('wattwatch.refresh_readings_rollups'));

    DELETE FROM readings_hourly WHERE bucket >= hour_start AND bucket < hour_end;
    INSERT INTO readings_hourly
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
    WHERE time >= hour_start AND time < hour_end
    GROUP BY 1, 2;
    GET DIAGNOSTICS written = ROW_COUNT;

    DELETE FROM readings_daily WHERE bucket >= day_start AND bucket < day_end;
    INSERT INTO readings_daily
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
    WHERE time >= day_start AND time < day_end
    GROUP BY 1, 2;
    GET DIAGNOSTICS more = ROW_COUNT;
    RETURN written + more;
END
$fn$;
REVOKE ALL ON FUNCTION refresh_readings_rollups(timestamptz, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION refresh_readings_rollups(timestamptz, timestamptz) IS
    'Recompute the hourly and daily rollup rows whose buckets overlap the window; returns rows written';

COMMENT ON TABLE readings_hourly IS 'Hourly rollup of readings per meter';
COMMENT ON TABLE readings_daily IS 'Daily rollup of readings per meter, UTC days';
COMMENT ON COLUMN readings_hourly.bucket IS 'Start of the hour bucket (UTC)';
COMMENT ON COLUMN readings_hourly.meter_id IS 'Meter';
COMMENT ON COLUMN readings_hourly.n_readings IS 'Readings in the bucket';
COMMENT ON COLUMN readings_hourly.active_power_kw_avg IS 'Mean active power [kW]';
COMMENT ON COLUMN readings_hourly.active_power_kw_min IS 'Lowest active power [kW]';
COMMENT ON COLUMN readings_hourly.active_power_kw_max IS 'Highest active power [kW]';
COMMENT ON COLUMN readings_hourly.reactive_power_kw_avg IS 'Mean reactive power [kW]';
COMMENT ON COLUMN readings_hourly.voltage_v_avg IS 'Mean voltage [V]';
COMMENT ON COLUMN readings_hourly.voltage_v_min IS 'Lowest voltage [V]';
COMMENT ON COLUMN readings_hourly.voltage_v_max IS 'Highest voltage [V]';
COMMENT ON COLUMN readings_hourly.current_a_avg IS 'Mean current [A]';
COMMENT ON COLUMN readings_hourly.current_a_max IS 'Highest current [A]';
COMMENT ON COLUMN readings_hourly.sub_metering_1_wh_sum IS 'Energy of sub-meter 1 [Wh]';
COMMENT ON COLUMN readings_hourly.sub_metering_2_wh_sum IS 'Energy of sub-meter 2 [Wh]';
COMMENT ON COLUMN readings_hourly.sub_metering_3_wh_sum IS 'Energy of sub-meter 3 [Wh]';
COMMENT ON COLUMN readings_daily.bucket IS 'Start of the day bucket (UTC)';
COMMENT ON COLUMN readings_daily.meter_id IS 'Meter';
COMMENT ON COLUMN readings_daily.n_readings IS 'Readings in the bucket';
COMMENT ON COLUMN readings_daily.active_power_kw_avg IS 'Mean active power [kW]';
COMMENT ON COLUMN readings_daily.active_power_kw_min IS 'Lowest active power [kW]';
COMMENT ON COLUMN readings_daily.active_power_kw_max IS 'Highest active power [kW]';
COMMENT ON COLUMN readings_daily.reactive_power_kw_avg IS 'Mean reactive power [kW]';
COMMENT ON COLUMN readings_daily.voltage_v_avg IS 'Mean voltage [V]';
COMMENT ON COLUMN readings_daily.voltage_v_min IS 'Lowest voltage [V]';
COMMENT ON COLUMN readings_daily.voltage_v_max IS 'Highest voltage [V]';
COMMENT ON COLUMN readings_daily.current_a_avg IS 'Mean current [A]';
COMMENT ON COLUMN readings_daily.current_a_max IS 'Highest current [A]';
COMMENT ON COLUMN readings_daily.sub_metering_1_wh_sum IS 'Energy of sub-meter 1 [Wh]';
COMMENT ON COLUMN readings_daily.sub_metering_2_wh_sum IS 'Energy of sub-meter 2 [Wh]';
COMMENT ON COLUMN readings_daily.sub_metering_3_wh_sum IS 'Energy of sub-meter 3 [Wh]';

GRANT SELECT ON readings_hourly, readings_daily TO wattwatch_reader, wattwatch_jobs;
GRANT EXECUTE ON FUNCTION refresh_readings_rollups(timestamptz, timestamptz)
    TO wattwatch_ingest, wattwatch_jobs;
