-- A rerun of the same file after a crash records each rejected line once: (source, line) is a key.
CREATE UNIQUE INDEX ingest_rejects_source_line_key
    ON ingest_rejects (source, line_number) WHERE line_number IS NOT NULL;
COMMENT ON INDEX ingest_rejects_source_line_key IS
    'One reject per source line, so reloading a file never duplicates its rejects';
