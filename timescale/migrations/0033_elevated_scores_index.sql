-- The anomalies dashboard's score heatmap shows elevated scores only: 25 is p = 1% on the
-- calibrated scale (score = 12.5 * -log10 p), so this index holds about 1% of the scores and a
-- heatmap over years reads it instead of every score.
CREATE INDEX anomaly_scores_elevated_idx ON anomaly_scores (meter_id, time) WHERE score >= 25;
