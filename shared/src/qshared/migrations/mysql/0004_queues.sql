-- qstack schema, version 4: paused queues, and what the throughput view reads.

-- One row per queue an operator has paused (or resumed): the dispatcher skips a paused
-- queue's pending jobs. A queue without a row is running.
CREATE TABLE queue_settings (
    queue_name VARCHAR(200) NOT NULL PRIMARY KEY,
    paused     BOOLEAN      NOT NULL DEFAULT FALSE,
    paused_at  DATETIME(6),
    updated_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The job's due time when it was assigned (jobs.run_at moves on with each retry), so that
-- enqueue-to-start latency can be read per attempt. NULL for rows written before this.
ALTER TABLE job_assignments ADD COLUMN run_at DATETIME(6);

-- Outcomes per second over the last minutes: a range scan, however long the table grows.
CREATE INDEX idx_assignment_finished ON job_assignments (finished_at);
