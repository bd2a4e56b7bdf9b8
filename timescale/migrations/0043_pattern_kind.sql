-- The detector names one more kind: `pattern`, a stretch of the cycle shaped unlike the
-- meter's own history at that phase (a missing or extra peak, a working day shaped like a
-- holiday) while each value is in range. Kinds have no CHECK (the vocabulary in
-- wattwatch/vocabulary.py is the list); the column's documentation follows it.

COMMENT ON COLUMN anomaly_scores.kind IS 'Kind of anomaly: spike, drop, outage, flatline, voltage_sag, voltage_swell, inconsistency, level_shift, unusual_time, pattern';
