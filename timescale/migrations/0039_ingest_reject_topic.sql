-- Rejects of the MQTT ingest (`wattwatch ingest mqtt`). A message has no file or line: its
-- rejects are keyed by the broker URL (source), the SHA-256 of the message's topic and payload
-- (source_sha256), the reading's 1-based position in the message (line_number) and the meter,
-- under the unique index of 0037, so a message the broker delivers again after a crash records
-- nothing twice. The topic is kept beside the raw payload; a payload that is not JSON, or not
-- readings, is the new reason invalid_payload. ingest_rejects is a plain table: the same in
-- both license modes.
ALTER TABLE ingest_rejects ADD COLUMN topic text;
COMMENT ON COLUMN ingest_rejects.topic IS
    'MQTT topic of the message the row came from; NULL for rows read from a file';

COMMENT ON COLUMN ingest_rejects.reason IS
    'Machine-readable reason code: column_count, unparseable, missing_time, missing_meter, invalid_meter, non_numeric, out_of_range, future_timestamp, nonexistent_local_time, conflict, database_refused, truncated_stream, invalid_payload';
COMMENT ON COLUMN ingest_rejects.source IS
    'File path or stream the row came from (an MQTT broker: its URL, without credentials)';
COMMENT ON COLUMN ingest_rejects.source_sha256 IS
    'SHA-256 (hex) of the source file''s bytes as read (a gzip file: its compressed bytes), or of an MQTT message''s topic, a newline and its payload; NULL for rejects recorded before migration 0037';
COMMENT ON COLUMN ingest_rejects.line_number IS
    'Line number in the source, 1-based, header included; for an MQTT message, the reading''s 1-based position in it';
COMMENT ON COLUMN ingest_rejects.raw IS
    'The raw text of the rejected line, or of the MQTT payload (for one reading of a JSON array: that reading as JSON)';
