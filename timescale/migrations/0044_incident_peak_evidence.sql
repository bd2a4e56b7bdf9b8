-- The undiscounted evidence of an incident's strongest reading: the readings that follow it in
-- the same incident have their evidence discounted by how long the state has lasted
-- (docs/detector.md, habituation), and the detector needs the peak to score the next ones alike
-- after a restart or from another worker.
ALTER TABLE anomaly_incidents ADD COLUMN peak_evidence real;
COMMENT ON COLUMN anomaly_incidents.peak_evidence IS
    'Evidence of the incident''s strongest reading before habituation (-log10 of its tail probability); NULL for incidents stored before migration 0044';
COMMENT ON COLUMN anomaly_incidents.peak_score IS
    'Highest score in the incident, before habituation [score 0-100]';
