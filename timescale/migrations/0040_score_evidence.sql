-- The uncapped evidence behind each score, -log10 of the reading's Bonferroni-adjusted tail
-- probability, so that readings rank beyond what the 0-100 score shows and a threshold can be
-- picked on it. A nullable column without default or constraint: the one kind of column that
-- TimescaleDB adds to a hypertable with compression enabled (timescale license) as to any other.
ALTER TABLE anomaly_scores ADD COLUMN evidence real;
COMMENT ON COLUMN anomaly_scores.evidence IS
    'Evidence of the score: -log10 of the reading''s tail probability, uncapped (4 = p 1e-4, score 50); NULL for scores stored before migration 0040';
