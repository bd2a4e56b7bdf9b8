-- The model registry, per-reading anomaly scores, incidents, retrain requests and drift reports.

CREATE TABLE models (
    version      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id     text REFERENCES meters (meter_id),
    algorithm    text NOT NULL,
    parameters   jsonb NOT NULL DEFAULT '{}',
    train_from   timestamptz,
    train_to     timestamptz,
    threshold    double precision,
    metrics      jsonb NOT NULL DEFAULT '{}',
    model        bytea,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    reason       text NOT NULL,
    trained_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (train_to IS NULL OR train_from IS NULL OR train_to >= train_from)
);
CREATE INDEX models_meter_trained_idx ON models (meter_id, trained_at DESC);
COMMENT ON TABLE models IS 'Model registry: every trained model version; scoring uses the newest active one per meter';
COMMENT ON COLUMN models.version IS 'Model version, increasing; recorded with every score it produced';
COMMENT ON COLUMN models.meter_id IS 'Meter the model was trained for; NULL for a model shared by all meters';
COMMENT ON COLUMN models.algorithm IS 'Algorithm name, e.g. seasonal-iforest or iforest-raw';
COMMENT ON COLUMN models.parameters IS 'Hyper-parameters and feature list, as JSON';
COMMENT ON COLUMN models.train_from IS 'Start of the training window';
COMMENT ON COLUMN models.train_to IS 'End of the training window';
COMMENT ON COLUMN models.threshold IS 'Score threshold above which a reading is anomalous [score 0-100]';
COMMENT ON COLUMN models.metrics IS 'Validation metrics computed at training time, as JSON';
COMMENT ON COLUMN models.model IS 'The serialised model';
COMMENT ON COLUMN models.status IS 'active or retired';
COMMENT ON COLUMN models.reason IS 'Why the model was trained: initial, drift retrain request, age, manual';
COMMENT ON COLUMN models.trained_at IS 'When training finished';

CREATE TABLE anomaly_scores (
    time          timestamptz NOT NULL,
    meter_id      text NOT NULL,
    model_version integer NOT NULL REFERENCES models (version),
    score         real NOT NULL CHECK (score BETWEEN 0 AND 100),
    is_anomaly    boolean NOT NULL,
    severity      text NOT NULL CHECK (severity IN ('none', 'low', 'medium', 'high', 'critical')),
    kind          text,
    top_feature   text,
    expected_active_power_kw double precision,
    scored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, time, model_version)
);
-- Same row rate as readings, so the same one-day chunks.
SELECT create_hypertable('anomaly_scores', by_range('time', INTERVAL '1 day'));
CREATE INDEX anomaly_scores_anomalies_idx ON anomaly_scores (time DESC) WHERE is_anomaly;
COMMENT ON TABLE anomaly_scores IS 'One row per scored reading and model version; written once, never rewritten';
COMMENT ON COLUMN anomaly_scores.time IS 'Timestamp of the scored reading';
COMMENT ON COLUMN anomaly_scores.meter_id IS 'Meter of the scored reading';
COMMENT ON COLUMN anomaly_scores.model_version IS 'Model version that produced the score';
COMMENT ON COLUMN anomaly_scores.score IS 'Calibrated anomaly score: the same score means the same rarity on every meter [score 0-100]';
COMMENT ON COLUMN anomaly_scores.is_anomaly IS 'Score at or above the model threshold';
COMMENT ON COLUMN anomaly_scores.severity IS 'none, low, medium, high or critical, from documented score bands';
COMMENT ON COLUMN anomaly_scores.kind IS 'Kind of anomaly: spike, drop, outage, flatline, voltage_sag, voltage_swell, inconsistency, level_shift, unusual_time';
COMMENT ON COLUMN anomaly_scores.top_feature IS 'Feature that contributed most to the score: the explanation';
COMMENT ON COLUMN anomaly_scores.expected_active_power_kw IS 'Active power the model expected at that time [kW]';
COMMENT ON COLUMN anomaly_scores.scored_at IS 'When the score was written';

CREATE TABLE anomaly_incidents (
    incident_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id          text NOT NULL REFERENCES meters (meter_id),
    model_version     integer NOT NULL REFERENCES models (version),
    start_time        timestamptz NOT NULL,
    end_time          timestamptz NOT NULL,
    n_readings        integer NOT NULL CHECK (n_readings > 0),
    peak_score        real NOT NULL CHECK (peak_score BETWEEN 0 AND 100),
    severity          text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    kind              text NOT NULL,
    top_feature       text,
    excess_energy_kwh double precision,
    estimated_cost    double precision,
    currency          text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time >= start_time),
    UNIQUE (meter_id, model_version, start_time)
);
CREATE INDEX anomaly_incidents_time_idx ON anomaly_incidents (start_time DESC, end_time);
COMMENT ON TABLE anomaly_incidents IS 'Consecutive anomalous readings of a meter merged into one event';
COMMENT ON COLUMN anomaly_incidents.incident_id IS 'Surrogate key';
COMMENT ON COLUMN anomaly_incidents.meter_id IS 'Meter of the incident';
COMMENT ON COLUMN anomaly_incidents.model_version IS 'Model version whose scores formed the incident';
COMMENT ON COLUMN anomaly_incidents.start_time IS 'First anomalous reading';
COMMENT ON COLUMN anomaly_incidents.end_time IS 'Last anomalous reading so far (inclusive)';
COMMENT ON COLUMN anomaly_incidents.n_readings IS 'Anomalous readings merged into the incident';
COMMENT ON COLUMN anomaly_incidents.peak_score IS 'Highest score in the incident [score 0-100]';
COMMENT ON COLUMN anomaly_incidents.severity IS 'Severity of the peak score';
COMMENT ON COLUMN anomaly_incidents.kind IS 'Most frequent kind among the incident''s readings';
COMMENT ON COLUMN anomaly_incidents.top_feature IS 'Feature that contributed most at the peak';
COMMENT ON COLUMN anomaly_incidents.excess_energy_kwh IS 'Energy used above (positive) or below (negative) the expected profile [kWh]';
COMMENT ON COLUMN anomaly_incidents.estimated_cost IS 'excess_energy_kwh priced at the meter tariff [currency]';
COMMENT ON COLUMN anomaly_incidents.currency IS 'Currency of estimated_cost';
COMMENT ON COLUMN anomaly_incidents.updated_at IS 'Last time the incident was extended or recomputed';

CREATE TABLE retrain_requests (
    request_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id      text REFERENCES meters (meter_id),
    reason        text NOT NULL,
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    handled_at    timestamptz,
    model_version integer REFERENCES models (version)
);
CREATE INDEX retrain_requests_pending_idx ON retrain_requests (requested_at) WHERE handled_at IS NULL;
COMMENT ON TABLE retrain_requests IS 'Requests to train a new model version, written by drift jobs or by hand, acted on by the detector';
COMMENT ON COLUMN retrain_requests.request_id IS 'Surrogate key';
COMMENT ON COLUMN retrain_requests.meter_id IS 'Meter to retrain; NULL for every meter';
COMMENT ON COLUMN retrain_requests.reason IS 'Why, e.g. critical drift on voltage_v';
COMMENT ON COLUMN retrain_requests.requested_by IS 'Who asked: drift, age, manual';
COMMENT ON COLUMN retrain_requests.requested_at IS 'When the request was written';
COMMENT ON COLUMN retrain_requests.handled_at IS 'When the detector acted on it; NULL while pending';
COMMENT ON COLUMN retrain_requests.model_version IS 'Model version trained in answer';

CREATE TABLE drift_reports (
    report_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id           uuid NOT NULL,
    run_at           timestamptz NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('light', 'full')),
    meter_id         text NOT NULL REFERENCES meters (meter_id),
    feature          text NOT NULL,
    reference_from   timestamptz NOT NULL,
    reference_to     timestamptz NOT NULL,
    current_from     timestamptz NOT NULL,
    current_to       timestamptz NOT NULL,
    reference_n      integer NOT NULL CHECK (reference_n >= 0),
    current_n        integer NOT NULL CHECK (current_n >= 0),
    psi              double precision,
    ks_statistic     double precision,
    ks_pvalue        double precision,
    wasserstein_norm double precision,
    status           text NOT NULL CHECK (status IN ('stable', 'warning', 'alert', 'critical', 'insufficient_data')),
    recommendation   text,
    UNIQUE (run_id, meter_id, feature)
);
CREATE INDEX drift_reports_meter_time_idx ON drift_reports (meter_id, feature, run_at DESC);
COMMENT ON TABLE drift_reports IS 'Data drift per run, meter and feature: current window against a season-aware baseline';
COMMENT ON COLUMN drift_reports.report_id IS 'Surrogate key';
COMMENT ON COLUMN drift_reports.run_id IS 'Identifier of the drift run, shared by its rows';
COMMENT ON COLUMN drift_reports.run_at IS 'When the run started';
COMMENT ON COLUMN drift_reports.mode IS 'light (PSI only) or full (PSI, KS, Wasserstein)';
COMMENT ON COLUMN drift_reports.meter_id IS 'Meter compared';
COMMENT ON COLUMN drift_reports.feature IS 'Feature compared, a readings column such as voltage_v';
COMMENT ON COLUMN drift_reports.reference_from IS 'Start of the reference (baseline) window';
COMMENT ON COLUMN drift_reports.reference_to IS 'End of the reference window';
COMMENT ON COLUMN drift_reports.current_from IS 'Start of the current window';
COMMENT ON COLUMN drift_reports.current_to IS 'End of the current window';
COMMENT ON COLUMN drift_reports.reference_n IS 'Non-missing values in the reference window';
COMMENT ON COLUMN drift_reports.current_n IS 'Non-missing values in the current window';
COMMENT ON COLUMN drift_reports.psi IS 'Population stability index on the baseline quantile bins, smoothed';
COMMENT ON COLUMN drift_reports.ks_statistic IS 'Two-sample Kolmogorov-Smirnov statistic (full runs)';
COMMENT ON COLUMN drift_reports.ks_pvalue IS 'p-value of the KS test (full runs); not a decision at large n';
COMMENT ON COLUMN drift_reports.wasserstein_norm IS 'Wasserstein distance divided by the baseline standard deviation (full runs)';
COMMENT ON COLUMN drift_reports.status IS 'stable, warning, alert, critical or insufficient_data';
COMMENT ON COLUMN drift_reports.recommendation IS 'Recommended action for the status';
