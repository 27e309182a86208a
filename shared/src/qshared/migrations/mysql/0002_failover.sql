-- qstack schema, version 2: failover bookkeeping and job mutexes.

-- How many workers died while running the job: past a limit the job is quarantined.
ALTER TABLE jobs ADD COLUMN crash_count INTEGER NOT NULL DEFAULT 0;

-- Two jobs with the same lock_key never run at the same time: at most one may be active.
-- PostgreSQL says so with a partial unique index; here a generated column holds the key
-- only while the job is assigned or running (NULL otherwise, and NULLs never collide).
-- It is INVISIBLE: `SELECT *` and backups do not see it.
ALTER TABLE jobs
    ADD COLUMN lock_key_active VARCHAR(255)
        AS (CASE WHEN status IN ('assigned', 'running') THEN lock_key END) VIRTUAL INVISIBLE,
    ADD UNIQUE KEY idx_jobs_lock_active (lock_key_active);
