-- Chunk intervals sized to the data instead of one day (readings) and one week (anomaly_scores):
-- one one-minute meter made 1,440-row chunks, 1,442 of them for the UCI household's four years,
-- and TRUNCATE or a query over the history locks every one. The runner computes the interval
-- (timescale/chunks.py) from WATTWATCH_CHUNK_TARGET_ROWS, the meters registered or expected and
-- the seconds between readings; `wattwatch db maintain` sizes it again as the fleet grows.
-- set_chunk_time_interval is Apache-licensed and behaves alike under both licenses. Only chunks
-- created from now on take the new interval; stored chunks keep their range.
SELECT set_chunk_time_interval('readings',
    make_interval(secs => current_setting('wattwatch.chunk_interval_seconds')::double precision));
SELECT set_chunk_time_interval('anomaly_scores',
    make_interval(secs => current_setting('wattwatch.chunk_interval_seconds')::double precision));
