-- Column comments of the rollups, the same whether they are continuous aggregates (timescale
-- license) or tables (apache license); COMMENT ON COLUMN accepts both.
DO $$
DECLARE
    rollup text;
    span   text;
    col    record;
BEGIN
    FOREACH rollup IN ARRAY ARRAY['readings_hourly', 'readings_daily'] LOOP
        span := CASE rollup WHEN 'readings_hourly' THEN 'hour' ELSE 'day' END;
        FOR col IN SELECT * FROM (VALUES
            ('bucket', format('Start of the %s bucket (UTC)', span)),
            ('meter_id', 'Meter'),
            ('n_readings', 'Readings in the bucket'),
            ('active_power_kw_avg', 'Mean active power [kW]'),
            ('active_power_kw_min', 'Lowest active power [kW]'),
            ('active_power_kw_max', 'Highest active power [kW]'),
            ('reactive_power_kw_avg', 'Mean reactive power [kW]'),
            ('voltage_v_avg', 'Mean voltage [V]'),
            ('voltage_v_min', 'Lowest voltage [V]'),
            ('voltage_v_max', 'Highest voltage [V]'),
            ('current_a_avg', 'Mean current [A]'),
            ('current_a_max', 'Highest current [A]'),
            ('sub_metering_1_wh_sum', 'Energy of sub-meter 1 [Wh]'),
            ('sub_metering_2_wh_sum', 'Energy of sub-meter 2 [Wh]'),
            ('sub_metering_3_wh_sum', 'Energy of sub-meter 3 [Wh]')) AS c (name, comment)
        LOOP
            EXECUTE format('COMMENT ON COLUMN %I.%I IS %L', rollup, col.name, col.comment);
        END LOOP;
    END LOOP;
END
$$;
