-- The workers of `detect run` and `drift run` that share the meters of one database. Each
-- live worker holds a session advisory lock on (lock_class, lock_key) on a connection of its
-- own: the lock says it is alive, and it goes with the connection when the process dies (or,
-- through TCP keepalives, when its machine vanishes). This table names the holders; a row
-- whose lock nobody holds is a dead worker's, and the next worker to look deletes it.

CREATE TABLE workers (
    service     text NOT NULL CHECK (service IN ('detector', 'drift')),
    worker_id   text NOT NULL CHECK (worker_id <> ''),
    lock_class  integer NOT NULL,
    lock_key    integer NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    meters      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (service, worker_id)
);
COMMENT ON TABLE workers IS 'Workers of `detect run` and `drift run` sharing the meters (rendezvous hashing of meter and worker id over the live ones); live while their advisory lock (lock_class, lock_key) is held, see live_workers';
COMMENT ON COLUMN workers.service IS 'detector or drift';
COMMENT ON COLUMN workers.worker_id IS 'WATTWATCH_WORKER_ID, by default host name and process id';
COMMENT ON COLUMN workers.lock_class IS 'First key of the worker''s advisory lock: one per service';
COMMENT ON COLUMN workers.lock_key IS 'Second key of the worker''s advisory lock: hashtext(worker_id)';
COMMENT ON COLUMN workers.host IS 'Host name of the machine (or container) the worker runs on';
COMMENT ON COLUMN workers.pid IS 'Process id of the worker on that host';
COMMENT ON COLUMN workers.started_at IS 'When the worker took its seat (again after a lost connection)';
COMMENT ON COLUMN workers.seen_at IS 'When the worker last listed the live workers';
COMMENT ON COLUMN workers.meters IS 'Meters the worker held when it last listed the live workers';

-- A worker is live while a session holds its lock: pg_locks shows the two keys of a
-- two-key advisory lock as classid and objid (objsubid 2), read as unsigned.
CREATE VIEW live_workers AS
SELECT w.*
  FROM workers w
 WHERE EXISTS (SELECT FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.classid = (w.lock_class::bigint & 4294967295)::oid
                  AND l.objid = (w.lock_key::bigint & 4294967295)::oid);
COMMENT ON VIEW live_workers IS 'The workers whose advisory lock is held now: the ones sharing the meters';
COMMENT ON COLUMN live_workers.service IS 'See workers.service';
COMMENT ON COLUMN live_workers.worker_id IS 'See workers.worker_id';
COMMENT ON COLUMN live_workers.lock_class IS 'See workers.lock_class';
COMMENT ON COLUMN live_workers.lock_key IS 'See workers.lock_key';
COMMENT ON COLUMN live_workers.host IS 'See workers.host';
COMMENT ON COLUMN live_workers.pid IS 'See workers.pid';
COMMENT ON COLUMN live_workers.started_at IS 'See workers.started_at';
COMMENT ON COLUMN live_workers.seen_at IS 'See workers.seen_at';
COMMENT ON COLUMN live_workers.meters IS 'See workers.meters';

GRANT SELECT ON workers, live_workers TO wattwatch_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON workers TO wattwatch_jobs;
GRANT SELECT ON live_workers TO wattwatch_jobs;
