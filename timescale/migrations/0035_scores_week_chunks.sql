-- Writing the scores is most of a backfill's server time (full UCI history, 2,074,779 scores:
-- 18 s of server CPU to insert them before, 9 s after), and two things cost more than they
-- give:
-- - one chunk per day of history: creating a chunk costs about 4 ms of server CPU (TimescaleDB
--   scans pg_constraint each time), 1,441 of them for UCI. A week per chunk makes a seventh of
--   that; scores are kept, compressed and dropped by the week (up to 7 days past the settings).
-- - the default index on time alone: no query reads scores by time alone (dashboards and alerts
--   filter by meter through the primary key, or read the partial indexes of anomalous and of
--   elevated scores), and it cost a fifth of every insert.
SELECT set_chunk_time_interval('anomaly_scores', INTERVAL '7 days');
DROP INDEX IF EXISTS anomaly_scores_time_idx;
