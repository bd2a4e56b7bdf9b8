-- Meters, the readings hypertable and the ingest bookkeeping (rejects, injected ground truth).
-- The timescaledb extension is created by the migration runner before any migration runs.

CREATE TABLE meters (
    meter_id        text PRIMARY KEY CHECK (meter_id <> '' AND length(meter_id) <= 128),
    name            text,
    site            text,
    timezone        text NOT NULL DEFAULT 'UTC',
    tariff_per_kwh  double precision CHECK (tariff_per_kwh >= 0),
    currency        text NOT NULL DEFAULT 'EUR',
    nominal_voltage_v double precision NOT NULL DEFAULT 230 CHECK (nominal_voltage_v > 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE meters IS 'One row per meter; registered by ingest the first time a meter is seen';
COMMENT ON COLUMN meters.meter_id IS 'Meter identifier as given by the source (file, --meter or simulator)';
COMMENT ON COLUMN meters.name IS 'Human-readable name shown on dashboards';
COMMENT ON COLUMN meters.site IS 'Site or building the meter belongs to';
COMMENT ON COLUMN meters.timezone IS 'IANA time zone of the meter, used for time-of-day and daily patterns';
COMMENT ON COLUMN meters.tariff_per_kwh IS 'Energy price used for incident cost estimates [currency/kWh]';
COMMENT ON COLUMN meters.currency IS 'ISO 4217 currency of tariff_per_kwh';
COMMENT ON COLUMN meters.nominal_voltage_v IS 'Nominal supply voltage; the EN 50160 band is ±10% around it [V]';
COMMENT ON COLUMN meters.created_at IS 'When the meter was registered';

CREATE TABLE readings (
    time              timestamptz NOT NULL,
    -- A meter id of `meters`; ingest registers meters before their rows. No foreign key: its
    -- per-row check locks the meter's row, which halved parallel COPY throughput (measured with
    -- scripts/bench_ingest.py), and only the ingest role may write readings.
    meter_id          text NOT NULL,
    active_power_kw   double precision,
    reactive_power_kw double precision,
    voltage_v         double precision,
    current_a         double precision,
    sub_metering_1_wh double precision,
    sub_metering_2_wh double precision,
    sub_metering_3_wh double precision,
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, time)
);
-- One day per chunk: at one-minute data, 1,000 meters make 1.44 M rows (~250 MB with indexes)
-- a day, which keeps the newest chunk and its indexes well inside shared memory.
SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'));
CREATE INDEX readings_ingested_at_idx ON readings (ingested_at);
COMMENT ON TABLE readings IS 'Electricity readings, one row per meter and timestamp; NULL is a missing value, never an invented one';
COMMENT ON COLUMN readings.time IS 'Timestamp of the reading (UTC in storage)';
COMMENT ON COLUMN readings.meter_id IS 'Meter that took the reading';
COMMENT ON COLUMN readings.active_power_kw IS 'Global active power averaged over the reading interval [kW]';
COMMENT ON COLUMN readings.reactive_power_kw IS 'Global reactive power averaged over the reading interval [kW]';
COMMENT ON COLUMN readings.voltage_v IS 'RMS voltage [V]';
COMMENT ON COLUMN readings.current_a IS 'RMS current intensity [A]';
COMMENT ON COLUMN readings.sub_metering_1_wh IS 'Active energy of sub-meter 1 during the interval (UCI: kitchen) [Wh]';
COMMENT ON COLUMN readings.sub_metering_2_wh IS 'Active energy of sub-meter 2 during the interval (UCI: laundry) [Wh]';
COMMENT ON COLUMN readings.sub_metering_3_wh IS 'Active energy of sub-meter 3 during the interval (UCI: water heater and air conditioning) [Wh]';
COMMENT ON COLUMN readings.ingested_at IS 'When the row was stored; detectors use it to find late arrivals';

CREATE TABLE ingest_rejects (
    reject_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,
    line_number bigint CHECK (line_number > 0),
    raw         text NOT NULL,
    reason      text NOT NULL,
    detail      text,
    meter_id    text,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_rejects_rejected_at_idx ON ingest_rejects (rejected_at);
COMMENT ON TABLE ingest_rejects IS 'Every input row that was not loaded, with why; input rows = loaded + duplicates + rejects';
COMMENT ON COLUMN ingest_rejects.reject_id IS 'Surrogate key';
COMMENT ON COLUMN ingest_rejects.source IS 'File path or stream the row came from';
COMMENT ON COLUMN ingest_rejects.line_number IS 'Line number in the source, 1-based, header included';
COMMENT ON COLUMN ingest_rejects.raw IS 'The raw text of the rejected line';
COMMENT ON COLUMN ingest_rejects.reason IS 'Machine-readable reason code (e.g. unparseable, column_count, non_numeric, out_of_range, future_timestamp, conflict)';
COMMENT ON COLUMN ingest_rejects.detail IS 'Human-readable detail naming the field and what was expected';
COMMENT ON COLUMN ingest_rejects.meter_id IS 'Meter of the row when it could be read';
COMMENT ON COLUMN ingest_rejects.rejected_at IS 'When the row was rejected';

CREATE TABLE injected_anomalies (
    injection_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id     text NOT NULL REFERENCES meters (meter_id),
    start_time   timestamptz NOT NULL,
    end_time     timestamptz NOT NULL,
    kind         text NOT NULL,
    magnitude    double precision,
    source       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time >= start_time),
    UNIQUE (meter_id, start_time, kind)
);
COMMENT ON TABLE injected_anomalies IS 'Ground truth: anomalies deliberately injected by the simulator or tests, to measure detection quality';
COMMENT ON COLUMN injected_anomalies.injection_id IS 'Surrogate key';
COMMENT ON COLUMN injected_anomalies.meter_id IS 'Meter the anomaly was injected into';
COMMENT ON COLUMN injected_anomalies.start_time IS 'First affected reading';
COMMENT ON COLUMN injected_anomalies.end_time IS 'Last affected reading (inclusive)';
COMMENT ON COLUMN injected_anomalies.kind IS 'Anomaly kind: spike, drop, outage, flatline, voltage_sag, voltage_swell, inconsistency, level_shift, unusual_time';
COMMENT ON COLUMN injected_anomalies.magnitude IS 'Size of the injected change in the unit of the affected field';
COMMENT ON COLUMN injected_anomalies.source IS 'What injected it, e.g. simulate --seed 42';
COMMENT ON COLUMN injected_anomalies.created_at IS 'When the label was written';
