-- A rejected line is identified by its file's content, not only by the file's name. With the key
-- (source, line_number) of 0006, a new file at the same path (export.csv of another day) and the
-- same file loaded for another --meter recorded none of their rejects: the insert found the
-- earlier file's line and did nothing. The key is now the path, the SHA-256 of the file's bytes,
-- the line and the meter (the fixed --meter, or the line's own), so loading the same file again
-- records each rejected line once, and another file records its own. Rows stored before this
-- migration keep a NULL hash. ingest_rejects is a plain table: the same in both license modes.
ALTER TABLE ingest_rejects ADD COLUMN source_sha256 text;
COMMENT ON COLUMN ingest_rejects.source_sha256 IS
    'SHA-256 (hex) of the source file''s bytes as read (a gzip file: its compressed bytes); NULL for rejects recorded before migration 0037';

DROP INDEX ingest_rejects_source_line_key;
CREATE UNIQUE INDEX ingest_rejects_line_key
    ON ingest_rejects (source, source_sha256, line_number, meter_id) NULLS NOT DISTINCT
    WHERE line_number IS NOT NULL;
COMMENT ON INDEX ingest_rejects_line_key IS
    'One reject per line of a given file content and meter, so reloading a file never duplicates its rejects while another file of the same name records its own';

COMMENT ON COLUMN ingest_rejects.reason IS
    'Machine-readable reason code: column_count, unparseable, missing_time, missing_meter, invalid_meter, non_numeric, out_of_range, future_timestamp, nonexistent_local_time, conflict, database_refused, truncated_stream';
COMMENT ON COLUMN ingest_rejects.meter_id IS
    'Meter of the row: the fixed --meter of the load, else the line''s meter column when it holds a meter id; part of the reject''s key';
