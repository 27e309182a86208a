-- qstack schema, version 4: paused queues, and what the throughput view reads.

-- One row per queue an operator has paused (or resumed): the dispatcher skips a paused
-- queue's pending jobs. A queue without a row is running.
CREATE TABLE queue_settings (
    queue_name TEXT PRIMARY KEY,
    paused     BOOLEAN     NOT NULL DEFAULT false,
    paused_at  TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The job's due time when it was assigned (jobs.run_at moves on with each retry), so that
-- enqueue-to-start latency can be read per attempt. NULL for rows written before this.
ALTER TABLE job_assignments ADD COLUMN run_at TIMESTAMPTZ;

-- Outcomes per second over the last minutes: a range scan, however long the table grows.
CREATE INDEX idx_assignment_finished ON job_assignments (finished_at);
