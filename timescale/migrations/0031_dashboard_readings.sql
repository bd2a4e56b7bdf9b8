-- One function the dashboards read readings through: it picks the source by the bucket width
-- Grafana asks for, so a panel over years reads the daily rollup and a panel over an hour reads
-- raw readings, with the same columns either way. Averages over rollup rows are weighted by their
-- reading counts, so they equal the average over the raw readings.
CREATE FUNCTION dashboard_readings(range_from timestamptz, range_to timestamptz, meter_ids text[],
                                   step interval)
RETURNS TABLE (
    "time"            timestamptz,
    meter_id          text,
    n_readings        bigint,
    active_power_kw   double precision,
    reactive_power_kw double precision,
    voltage_v         double precision,
    voltage_v_min     double precision,
    voltage_v_max     double precision,
    current_a         double precision,
    sub_metering_1_wh double precision,
    sub_metering_2_wh double precision,
    sub_metering_3_wh double precision
)
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $fn$
BEGIN
    IF step < INTERVAL '1 hour' THEN
        RETURN QUERY
        SELECT time_bucket(step, r.time) AS b, r.meter_id, count(*), avg(r.active_power_kw),
               avg(r.reactive_power_kw), avg(r.voltage_v), min(r.voltage_v), max(r.voltage_v),
               avg(r.current_a), sum(r.sub_metering_1_wh), sum(r.sub_metering_2_wh),
               sum(r.sub_metering_3_wh)
        FROM readings r
        WHERE r.meter_id = ANY (meter_ids) AND r.time >= range_from AND r.time <= range_to
        GROUP BY 1, 2 ORDER BY 1, 2;
    ELSIF step < INTERVAL '1 day' THEN
        RETURN QUERY
        SELECT time_bucket(step, h.bucket) AS b, h.meter_id, sum(h.n_readings)::bigint,
               sum(h.active_power_kw_avg * h.n_readings) / nullif(sum(h.n_readings), 0),
               sum(h.reactive_power_kw_avg * h.n_readings) / nullif(sum(h.n_readings), 0),
               sum(h.voltage_v_avg * h.n_readings) / nullif(sum(h.n_readings), 0),
               min(h.voltage_v_min), max(h.voltage_v_max),
               sum(h.current_a_avg * h.n_readings) / nullif(sum(h.n_readings), 0),
               sum(h.sub_metering_1_wh_sum), sum(h.sub_metering_2_wh_sum), sum(h.sub_metering_3_wh_sum)
        FROM readings_hourly h
        WHERE h.meter_id = ANY (meter_ids) AND h.bucket >= time_bucket(INTERVAL '1 hour', range_from)
          AND h.bucket <= range_to
        GROUP BY 1, 2 ORDER BY 1, 2;
    ELSE
        RETURN QUERY
        SELECT time_bucket(step, d.bucket) AS b, d.meter_id, sum(d.n_readings)::bigint,
               sum(d.active_power_kw_avg * d.n_readings) / nullif(sum(d.n_readings), 0),
               sum(d.reactive_power_kw_avg * d.n_readings) / nullif(sum(d.n_readings), 0),
               sum(d.voltage_v_avg * d.n_readings) / nullif(sum(d.n_readings), 0),
               min(d.voltage_v_min), max(d.voltage_v_max),
               sum(d.current_a_avg * d.n_readings) / nullif(sum(d.n_readings), 0),
               sum(d.sub_metering_1_wh_sum), sum(d.sub_metering_2_wh_sum), sum(d.sub_metering_3_wh_sum)
        FROM readings_daily d
        WHERE d.meter_id = ANY (meter_ids) AND d.bucket >= time_bucket(INTERVAL '1 day', range_from)
          AND d.bucket <= range_to
        GROUP BY 1, 2 ORDER BY 1, 2;
    END IF;
END
$fn$;
COMMENT ON FUNCTION dashboard_readings(timestamptz, timestamptz, text[], interval) IS
    'Readings of the given meters in [range_from, range_to] per bucket of width step, from raw readings (step under an hour), the hourly rollup (under a day) or the daily rollup';
GRANT EXECUTE ON FUNCTION dashboard_readings(timestamptz, timestamptz, text[], interval)
    TO wattwatch_reader;
