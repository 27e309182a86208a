-- qstack schema, version 3: system-level snapshots shared by every scheduler replica.
--
-- `/admin/metrics` (the queue and worker gauges) is computed from the jobs and workers tables;
-- the row here holds the last rendering so that it is computed once per interval, however
-- many replicas the scrapers reach.
CREATE TABLE system_snapshots (
    name        VARCHAR(255) NOT NULL PRIMARY KEY,
    body        LONGBLOB     NOT NULL,
    computed_at DATETIME(6)  NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
