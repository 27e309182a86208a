-- qstack schema, version 2: failover bookkeeping and job mutexes.

-- How many workers died while running the job: past a limit the job is quarantined.
ALTER TABLE jobs ADD COLUMN crash_count INTEGER NOT NULL DEFAULT 0;

-- Two jobs with the same lock_key never run at the same time: at most one may be active.
CREATE UNIQUE INDEX idx_jobs_lock_active ON jobs (lock_key)
    WHERE lock_key IS NOT NULL AND status IN ('assigned', 'running');
