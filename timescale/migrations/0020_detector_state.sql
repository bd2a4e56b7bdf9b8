-- Detector state: the per-meter scoring watermark, and the daily load patterns
-- (typical and atypical days) that `wattwatch detect patterns` computes for dashboards.

CREATE TABLE detector_watermarks (
    meter_id     text PRIMARY KEY REFERENCES meters (meter_id),
    ingested_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE detector_watermarks IS 'Per meter, how far `detect run` has scored: every reading stored up to ingested_at has a score (late readings have a newer ingested_at, so they are still scored)';
COMMENT ON COLUMN detector_watermarks.meter_id IS 'Meter';
COMMENT ON COLUMN detector_watermarks.ingested_at IS 'Newest readings.ingested_at whose readings are all scored';
COMMENT ON COLUMN detector_watermarks.updated_at IS 'When the watermark last moved';

CREATE TABLE daily_patterns (
    meter_id      text NOT NULL REFERENCES meters (meter_id),
    day           date NOT NULL,
    cluster       integer NOT NULL,
    is_atypical   boolean NOT NULL,
    energy_kwh    double precision,
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, day)
);
CREATE INDEX daily_patterns_atypical_idx ON daily_patterns (day DESC) WHERE is_atypical;
COMMENT ON TABLE daily_patterns IS 'Each day of a meter assigned to a typical daily load profile (DBSCAN cluster of its 24 hourly means), or marked atypical';
COMMENT ON COLUMN daily_patterns.meter_id IS 'Meter';
COMMENT ON COLUMN daily_patterns.day IS 'Local calendar day of the meter (meters.timezone)';
COMMENT ON COLUMN daily_patterns.cluster IS 'Typical-day cluster number from 0; -1 for an atypical day';
COMMENT ON COLUMN daily_patterns.is_atypical IS 'The day fits no typical profile (DBSCAN noise)';
COMMENT ON COLUMN daily_patterns.energy_kwh IS 'Active energy used that day [kWh]';
COMMENT ON COLUMN daily_patterns.computed_at IS 'When the patterns were last computed';

CREATE TABLE daily_pattern_profiles (
    meter_id        text NOT NULL REFERENCES meters (meter_id),
    cluster         integer NOT NULL,
    hour            smallint NOT NULL CHECK (hour BETWEEN 0 AND 23),
    active_power_kw double precision NOT NULL,
    n_days          integer NOT NULL CHECK (n_days > 0),
    computed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, cluster, hour)
);
COMMENT ON TABLE daily_pattern_profiles IS 'The typical daily profiles: mean active power per local hour of the days in each cluster';
COMMENT ON COLUMN daily_pattern_profiles.meter_id IS 'Meter';
COMMENT ON COLUMN daily_pattern_profiles.cluster IS 'Typical-day cluster (daily_patterns.cluster); -1 gathers the atypical days';
COMMENT ON COLUMN daily_pattern_profiles.hour IS 'Local hour of the day, 0-23';
COMMENT ON COLUMN daily_pattern_profiles.active_power_kw IS 'Mean active power in that hour over the cluster''s days [kW]';
COMMENT ON COLUMN daily_pattern_profiles.n_days IS 'Days in the cluster';
COMMENT ON COLUMN daily_pattern_profiles.computed_at IS 'When the profiles were computed';

GRANT SELECT ON detector_watermarks, daily_patterns, daily_pattern_profiles TO wattwatch_reader;
GRANT SELECT, INSERT, UPDATE ON detector_watermarks TO wattwatch_jobs;
-- Patterns are recomputed whole for a meter: the old ones are replaced.
GRANT SELECT, INSERT, UPDATE, DELETE ON daily_patterns, daily_pattern_profiles TO wattwatch_jobs;
