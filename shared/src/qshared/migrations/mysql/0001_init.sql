-- qstack schema, version 1 (MySQL 8 / MariaDB 10.6+): the specification's five tables, jobs
-- and schema_migrations, with the same names and columns as migrations/postgres/0001.
--
-- Conventions of this dialect: timestamps are DATETIME(6) in UTC (every session sets
-- time_zone '+00:00'); JSON columns are JSON (MariaDB: LONGTEXT checked by json_valid);
-- text is utf8mb4_bin, so that comparisons are case-sensitive as in PostgreSQL.
-- Identifiers qstack validates (queue, task and worker names: 200 characters; keys and
-- owners: 255) are VARCHARs of that size so that they can be indexed whole.

-- Not a table of the data model: MySQL has no sequences, so the fencing-token sequence of
-- the PostgreSQL schema (qstack_fencing_seq) is a row here, bumped with
-- `SET value = LAST_INSERT_ID(value + n)`. A backup carries it as a sequence, not a table.
CREATE TABLE qstack_sequences (
    name  VARCHAR(64) NOT NULL PRIMARY KEY,
    value BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO qstack_sequences (name, value) VALUES ('qstack_fencing_seq', 0);

-- Not a table of the data model either: MySQL has no LISTEN/NOTIFY. A statement that would
-- pg_notify inserts a row here in its transaction; subscribers poll for rows of their
-- channel (see mysql_sessions.py) and delete those older than a minute.
CREATE TABLE qstack_notifications (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel    VARCHAR(64) NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY idx_notifications_channel (channel, id),
    KEY idx_notifications_time (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE jobs (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    queue_name       VARCHAR(200) NOT NULL,
    task_name        VARCHAR(200) NOT NULL,
    payload          JSON         NOT NULL DEFAULT ('null'),
    priority         INTEGER      NOT NULL DEFAULT 0,
    status           VARCHAR(16)  NOT NULL DEFAULT 'pending',
    attempts         INTEGER      NOT NULL DEFAULT 0,
    max_attempts     INTEGER      NOT NULL DEFAULT 3,
    run_at           DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    timeout          DOUBLE       NOT NULL DEFAULT 300,
    unique_key       VARCHAR(255),
    lock_key         VARCHAR(255),
    worker_id        VARCHAR(200),
    token            BIGINT,
    lease_expires_at DATETIME(6),
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    assigned_at      DATETIME(6),
    started_at       DATETIME(6),
    finished_at      DATETIME(6),
    last_error       TEXT,
    result           JSON,
    CONSTRAINT jobs_status_check
        CHECK (status IN ('pending', 'assigned', 'running', 'succeeded', 'dead', 'cancelled')),
    CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    -- NULLs never collide in a unique index: only jobs with a key are deduplicated.
    UNIQUE KEY idx_jobs_unique_key (unique_key),
    -- No partial indexes here: the state leads instead, so that the dispatcher reads the
    -- pending jobs of one queue in dispatch order (priority DESC takes effect on MySQL 8 and
    -- MariaDB 10.8+; older MariaDB sorts the pick, which stays correct).
    KEY idx_jobs_dispatch (status, queue_name, priority DESC, run_at, id),
    KEY idx_jobs_worker_active (worker_id, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE queue_workers (
    id                VARCHAR(200) NOT NULL PRIMARY KEY,
    hostname          VARCHAR(255) NOT NULL,
    pid               INTEGER      NOT NULL,
    queues            TEXT         NOT NULL,
    concurrency       INTEGER      NOT NULL,
    prefetch          INTEGER      NOT NULL DEFAULT 0,
    status            VARCHAR(16)  NOT NULL DEFAULT 'active',
    requested         VARCHAR(32),
    version           VARCHAR(255) NOT NULL DEFAULT '',
    admin_url         TEXT,
    started_at        DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_heartbeat_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at        DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT queue_workers_concurrency_check CHECK (concurrency >= 1),
    CONSTRAINT queue_workers_status_check
        CHECK (status IN ('active', 'draining', 'stopped', 'failed')),
    KEY idx_worker_status_updated (status, updated_at),
    KEY idx_worker_queues (queues(255))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE distributed_locks (
    lock_key    VARCHAR(255) NOT NULL PRIMARY KEY,
    owner       VARCHAR(255) NOT NULL,
    worker_id   VARCHAR(200),
    token       BIGINT       NOT NULL,
    acquired_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at  DATETIME(6)  NOT NULL,
    KEY idx_lock_expires_worker (expires_at, worker_id),
    KEY idx_lock_worker (worker_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE job_assignments (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    job_id      BIGINT       NOT NULL,
    token       BIGINT       NOT NULL,
    worker_id   VARCHAR(200) NOT NULL,
    queue_name  VARCHAR(200) NOT NULL,
    assigned_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    started_at  DATETIME(6),
    finished_at DATETIME(6),
    outcome     VARCHAR(32),
    KEY idx_assignment_worker_time (worker_id, assigned_at),
    KEY idx_assignment_queue_time (queue_name, assigned_at),
    KEY idx_assignment_job (job_id, token)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE worker_health_checks (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    worker_id    VARCHAR(200) NOT NULL,
    checked_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    status       VARCHAR(16)  NOT NULL,
    cpu_percent  DOUBLE,
    memory_bytes BIGINT,
    in_flight    INTEGER,
    loop_lag_ms  DOUBLE,
    details      JSON,
    CONSTRAINT worker_health_checks_status_check
        CHECK (status IN ('healthy', 'degraded', 'unhealthy')),
    KEY idx_health_worker_time (worker_id, checked_at),
    KEY idx_health_status_time (status, checked_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE failover_events (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_type       VARCHAR(64)  NOT NULL,
    failed_worker_id VARCHAR(200),
    target_worker_id VARCHAR(200),
    jobs_recovered   INTEGER      NOT NULL DEFAULT 0,
    jobs_dead        INTEGER      NOT NULL DEFAULT 0,
    failover_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    detection_ms     DOUBLE,
    recovery_ms      DOUBLE,
    details          JSON,
    KEY idx_failover_worker_time (failed_worker_id, failover_at),
    KEY idx_failover_event_type (event_type, failover_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
