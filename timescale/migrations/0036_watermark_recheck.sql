-- Where the late-commit check of a meter starts. A transaction stamps ingested_at when it
-- starts, so readings stamped before the watermark can commit after a cycle moved it; every
-- cycle looked again at the readings stored within 10 s before the watermark. After a bulk load
-- just before the detector read, those were a whole transaction of history for every meter,
-- checked again at the next new reading (1.2 s at 1,000 meters, a live reading's latency).
-- Readings stored before a cycle's settled point (10 s before it read) were all committed when
-- it read, so the check starts there; once the whole window has settled an idle cycle checks
-- it one last time and closes it (recheck_after = ingested_at).
ALTER TABLE detector_watermarks ADD COLUMN recheck_after timestamptz;
COMMENT ON COLUMN detector_watermarks.recheck_after IS 'Readings stored after this and up to ingested_at are checked again for a score (a transaction that committed late); NULL: from 10 s before ingested_at';
