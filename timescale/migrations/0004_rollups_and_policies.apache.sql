-- Rollups, Apache license: continuous aggregates and policies do not exist here, so the rollups
-- are tables with the columns the continuous aggregates have under the timescale license, kept
-- current by refresh_readings_rollups() (called by ingest after each load and by
-- `wattwatch db maintain`). Dashboards read them instead of raw readings.
-- Compression is not available; retention is applied by `wattwatch db maintain` with drop_chunks.

CREATE TABLE readings_hourly (
    bucket                timestamptz NOT NULL,
    meter_id              text NOT NULL,
    n_readings            bigint NOT NULL,
    active_power_kw_avg   double precision,
    active_power_kw_min   double precision,
    active_power_kw_max   double precision,
    reactive_power_kw_avg double precision,
    voltage_v_avg         double precision,
    voltage_v_min         double precision,
    voltage_v_max         double precision,
    current_a_avg         double precision,
    current_a_max         double precision,
    sub_metering_1_wh_sum double precision,
    sub_metering_2_wh_sum double precision,
    sub_metering_3_wh_sum double precision,
    PRIMARY KEY (meter_id, bucket)
);
CREATE INDEX readings_hourly_bucket_idx ON readings_hourly (bucket);
CREATE TABLE readings_daily (LIKE readings_hourly INCLUDING ALL);

CREATE FUNCTION refresh_readings_rollups(window_start timestamptz, window_end timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    rollup  record;
    first   timestamptz;
    last    timestamptz;
    n       integer;
    written integer := 0;
BEGIN
    IF window_end < window_start THEN
        RAISE EXCEPTION 'refresh_readings_rollups: window_end % is before window_start %', window_end, window_start;
    END IF;
    -- One refresher at a time, so two loads never race on the same buckets.
    PERFORM pg_advisory_xact_lock(hashtext('wattwatch.refresh_readings_rollups'));
    FOR rollup IN
        SELECT * FROM (VALUES ('readings_hourly', INTERVAL '1 hour'),
                              ('readings_daily', INTERVAL '1 day')) AS r (name, width)
    LOOP
        first := time_bucket(rollup.width, window_start);
        last := time_bucket(rollup.width, window_end) + rollup.width;
        EXECUTE format('DELETE FROM %I WHERE bucket >= $1 AND bucket < $2', rollup.name)
            USING first, last;
        EXECUTE format($sql$
            INSERT INTO %I
            SELECT time_bucket($3, time) AS bucket, meter_id,
        count(*)               AS n_readings,
        avg(active_power_kw)   AS active_power_kw_avg,
        min(active_power_kw)   AS active_power_kw_min,
        max(active_power_kw)   AS active_power_kw_max,
        avg(reactive_power_kw) AS reactive_power_kw_avg,
        avg(voltage_v)         AS voltage_v_avg,
        min(voltage_v)         AS voltage_v_min,
        max(voltage_v)         AS voltage_v_max,
        avg(current_a)         AS current_a_avg,
        max(current_a)         AS current_a_max,
        sum(sub_metering_1_wh) AS sub_metering_1_wh_sum,
        sum(sub_metering_2_wh) AS sub_metering_2_wh_sum,
        sum(sub_metering_3_wh) AS sub_metering_3_wh_sum
            FROM readings
            WHERE time >= $1 AND time < $2
            GROUP BY 1, 2
        $sql$, rollup.name) USING first, last, rollup.width;
        GET DIAGNOSTICS n = ROW_COUNT;
        written := written + n;
    END LOOP;
    RETURN written;
END
$fn$;
REVOKE ALL ON FUNCTION refresh_readings_rollups(timestamptz, timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION refresh_readings_rollups(timestamptz, timestamptz) IS
    'Recompute the hourly and daily rollup rows whose buckets overlap the window; returns rows written';
COMMENT ON TABLE readings_hourly IS 'Hourly rollup of readings per meter';
COMMENT ON TABLE readings_daily IS 'Daily rollup of readings per meter, UTC days';

GRANT SELECT ON readings_hourly, readings_daily TO wattwatch_reader, wattwatch_jobs;
GRANT EXECUTE ON FUNCTION refresh_readings_rollups(timestamptz, timestamptz)
    TO wattwatch_ingest, wattwatch_jobs;
