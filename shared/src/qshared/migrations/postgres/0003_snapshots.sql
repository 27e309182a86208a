-- qstack schema, version 3: system-level snapshots shared by every scheduler replica.
--
-- `/admin/metrics` (the queue and worker gauges) is computed from the jobs and workers tables;
-- the row here holds the last rendering so that it is computed once per interval, however
-- many replicas the scrapers reach.
CREATE TABLE system_snapshots (
    name         TEXT PRIMARY KEY,
    body         BYTEA       NOT NULL,
    computed_at  TIMESTAMPTZ NOT NULL
);
