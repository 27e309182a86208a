-- qstack schema, version 6: pending jobs by due time. The dispatch index is ordered by
-- queue and priority, so "when does the next job fall due" (the dispatcher asks after each
-- pass that emptied what was due) read every delayed job: with 100,000 of them, 20-35 ms (a
-- sequential scan), 0.1 ms with this index. A pass over a queue with few jobs due uses it
-- too; under a backlog the planner keeps the dispatch index, which stops at the pass's LIMIT.
CREATE INDEX IF NOT EXISTS idx_jobs_pending_due ON jobs (run_at) WHERE status = 'pending';
