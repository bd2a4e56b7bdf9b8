-- Drift summaries: what a drift run keeps so that it need not re-read whole windows. A baseline
-- summary per meter and fixed reference window (drift/summaries.py), and a summary of each
-- complete UTC day of current readings against it. Every row is written whole in one statement,
-- so a run that stops half-way leaves complete summaries or none.

CREATE TABLE drift_baselines (
    baseline_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id       text NOT NULL REFERENCES meters (meter_id) ON DELETE CASCADE,
    reference_from timestamptz NOT NULL,
    reference_to   timestamptz NOT NULL,
    settings       text NOT NULL,
    summary        bytea NOT NULL,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (meter_id, reference_from, reference_to, settings)
);
COMMENT ON TABLE drift_baselines IS 'Summary of a meter''s reference window for drift judging, per feature; reused by every run until the reference window changes';
COMMENT ON COLUMN drift_baselines.baseline_id IS 'Surrogate key';
COMMENT ON COLUMN drift_baselines.meter_id IS 'Meter';
COMMENT ON COLUMN drift_baselines.reference_from IS 'Start of the reference window';
COMMENT ON COLUMN drift_baselines.reference_to IS 'End of the reference window (exclusive)';
COMMENT ON COLUMN drift_baselines.settings IS 'Format, meter time zone and the drift settings the summaries depend on (bins, minimum reference values per stratum); another value is another baseline';
COMMENT ON COLUMN drift_baselines.summary IS 'Per feature: stratum grids, in-sample and held-out PIT counts, residual quantile bins (numpy .npz)';
COMMENT ON COLUMN drift_baselines.computed_at IS 'When the summary was computed';

CREATE TABLE drift_day_summaries (
    baseline_id bigint NOT NULL REFERENCES drift_baselines (baseline_id) ON DELETE CASCADE,
    day         date NOT NULL,
    summary     bytea NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (baseline_id, day)
);
COMMENT ON TABLE drift_day_summaries IS 'One complete UTC day of a meter''s readings summarised against a drift baseline (PIT and residual counts per feature); a drift run adds up its window''s days';
COMMENT ON COLUMN drift_day_summaries.baseline_id IS 'Baseline the day was summarised against';
COMMENT ON COLUMN drift_day_summaries.day IS 'UTC day [00:00, 24:00) of the readings';
COMMENT ON COLUMN drift_day_summaries.summary IS 'Per feature: readings present, PIT counts per part of day and fine bin, residual counts and excess (numpy .npz)';
COMMENT ON COLUMN drift_day_summaries.computed_at IS 'When the summary was computed';

-- Late readings: every run deletes the summaries of days (and baselines of windows) that
-- received readings since the previous run's check.
CREATE TABLE drift_summary_checks (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    checked_through timestamptz NOT NULL
);
COMMENT ON TABLE drift_summary_checks IS 'How far drift runs have looked for late readings (one row)';
COMMENT ON COLUMN drift_summary_checks.singleton IS 'Always true: the table has one row';
COMMENT ON COLUMN drift_summary_checks.checked_through IS 'Readings ingested from this time on (minus WATTWATCH_DRIFT_INGEST_MARGIN_MINUTES) are checked by the next run';

GRANT SELECT, INSERT, UPDATE, DELETE ON drift_baselines, drift_day_summaries, drift_summary_checks TO wattwatch_jobs;
