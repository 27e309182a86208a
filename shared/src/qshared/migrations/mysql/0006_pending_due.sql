-- qstack schema, version 6: pending jobs by due time. The dispatch index is ordered by
-- status, queue and priority, so "when does the next job fall due" (the dispatcher asks after
-- each pass that emptied what was due) read every delayed job, and pick_due over a queue with
-- few jobs due every delayed job of a higher priority: with 100,000 of them, 32 ms and 42 ms
-- on MariaDB 10.11, 0.2 and 0.4 ms with this index (one index dive; the due jobs only).
-- Under a backlog the optimizer keeps the dispatch index, which stops at the pass's LIMIT.
ALTER TABLE jobs ADD INDEX idx_jobs_pending_due (status, run_at);
