-- Named queries of the PostgreSQL dialect. Wake-ups (pg_notify) sit in CTEs that the final
-- SELECT reads through a scalar subquery: an unread CTE, or a LEFT JOIN the planner can
-- remove, would silently skip them. Each block starts with `-- name: NAME --`;
-- the MySQL dialect defines the same names (a test checks it).

-- name: enqueue --
-- Inserts a batch; ids are drawn first so that every input row knows its id even when
-- ON CONFLICT skips it (a unique_key seen before).
WITH input AS (
    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, t.*
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::float8[],
                $7::float8[], $8::text[], $9::text[])
         WITH ORDINALITY AS t(queue_name, task_name, payload, priority, max_attempts, timeout,
                              delay_s, unique_key, lock_key, ord)
), ins AS (
    INSERT INTO jobs (id, queue_name, task_name, payload, priority, max_attempts, timeout,
                      run_at, unique_key, lock_key)
    SELECT id, queue_name, task_name, payload::jsonb, priority, max_attempts, timeout,
           now() + make_interval(secs => delay_s), unique_key, lock_key
    FROM input ORDER BY ord
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id
), notified AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT input.id, input.unique_key, (ins.id IS NOT NULL) AS created,
       (SELECT count(*) FROM notified) AS woke
FROM input LEFT JOIN ins ON ins.id = input.id
ORDER BY input.ord

-- name: ids_by_unique_key --
SELECT id, unique_key FROM jobs WHERE unique_key = ANY($1::text[])

-- name: get_job --
SELECT * FROM jobs WHERE id = $1

-- name: job_assignments --
SELECT * FROM job_assignments WHERE job_id = $1 ORDER BY id

-- name: cancel_job --
-- Only a job that has not started can be cancelled; the guarded UPDATE makes that atomic.
-- Its assignment row is closed by close_cancelled_assignments, in the same transaction.
UPDATE jobs SET status = 'cancelled', finished_at = now(), worker_id = NULL
WHERE id = $1 AND status IN ('pending', 'assigned')
RETURNING id, token

-- name: close_cancelled_assignments --
-- A statement of its own after the cancel: when the cancel waited for a dispatch pass that
-- was assigning the job, the assignment row that pass wrote is newer than the cancelling
-- statement's snapshot, and an UPDATE there would not see it (the job would be cancelled
-- with its assignment left open). A new statement has a new snapshot.
UPDATE job_assignments ja SET outcome = 'cancelled', finished_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token)
WHERE ja.job_id = c.id AND ja.token = c.token AND ja.outcome IS NULL

-- name: list_jobs --
SELECT * FROM jobs
WHERE ($1::text IS NULL OR queue_name = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR task_name = $3)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5

-- name: queue_stats --
SELECT queue_name,
       count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS pending,
       count(*) FILTER (WHERE status = 'pending' AND run_at > now()) AS scheduled,
       count(*) FILTER (WHERE status = 'assigned') AS assigned,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'pending' AND last_error IS NOT NULL) AS failed,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       COALESCE(EXTRACT(EPOCH FROM now() - min(run_at) FILTER (
           WHERE status = 'pending' AND run_at <= now())), 0)::float8 AS oldest_pending_age_s
FROM jobs GROUP BY queue_name ORDER BY queue_name

-- name: worker_capacity --
-- Workers that may receive jobs, with what they hold now.
SELECT w.id, w.queues, w.concurrency, w.prefetch, w.admin_url,
       (SELECT count(*) FROM jobs j
         WHERE j.worker_id = w.id AND j.status IN ('assigned', 'running')) AS in_flight
FROM queue_workers w
WHERE w.status = 'active' AND w.last_heartbeat_at > now() - make_interval(secs => $1)

-- name: lock_workers --
-- Share-locks the chosen workers for the dispatch transaction: a worker stopping at the
-- same moment waits for it, then sees (and hands back) what it was given.
SELECT id FROM queue_workers WHERE id = ANY($1::text[]) AND status = 'active' FOR SHARE

-- name: pick_pending --
-- A job whose lock_key another job holds (assigned or running) waits, and so does every job
-- of a paused queue: read in the same statement, so a resume counts from the next pass.
SELECT j.id, j.queue_name, j.priority, j.run_at, j.lock_key
FROM unnest($1::text[], $2::int[]) AS q(name, lim)
CROSS JOIN LATERAL (
    SELECT id, queue_name, priority, run_at, lock_key FROM jobs p
    WHERE status = 'pending' AND queue_name = q.name AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM queue_settings s WHERE s.queue_name = q.name AND s.paused)
      AND (p.lock_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM jobs a WHERE a.lock_key = p.lock_key AND a.status IN ('assigned', 'running')))
    ORDER BY priority DESC, run_at, id
    LIMIT q.lim
    FOR UPDATE SKIP LOCKED
) j

-- name: assign --
WITH v AS (
    SELECT * FROM unnest($1::bigint[], $2::text[]) AS v(id, worker_id)
), upd AS (
    UPDATE jobs j SET status = 'assigned', worker_id = v.worker_id,
                      token = nextval('qstack_fencing_seq'), attempts = j.attempts + 1,
                      assigned_at = now(), started_at = NULL, finished_at = NULL
    FROM v WHERE j.id = v.id AND j.status = 'pending'
    RETURNING j.id, j.token, j.worker_id, j.queue_name, j.run_at
), ins AS (
    INSERT INTO job_assignments (job_id, token, worker_id, queue_name, run_at)
    SELECT id, token, worker_id, queue_name, run_at FROM upd
), notified AS (
    SELECT pg_notify('qstack_w_' || md5(worker_id), '') FROM (SELECT DISTINCT worker_id FROM upd) w
)
SELECT (SELECT count(*) FROM upd) AS assigned, (SELECT count(*) FROM notified) AS woke

-- name: next_due_in --
-- Seconds (on the database's clock) until the next pending job falls due. Jobs that fell
-- due in the last 10 ms count too (as 0 or less): one may have come due just after a pass
-- looked, and must not wait for the next poll.
SELECT EXTRACT(EPOCH FROM min(run_at) - now())::float8 AS due_in
FROM jobs WHERE status = 'pending' AND run_at > now() - interval '10 milliseconds'

-- name: claim_assigned --
-- A worker takes the jobs assigned to it that it does not hold yet.
SELECT id, token, queue_name, task_name, payload, priority, attempts, max_attempts, timeout,
       created_at, run_at
FROM jobs
WHERE worker_id = $1 AND status = 'assigned' AND NOT (id = ANY($2::bigint[]))
ORDER BY priority DESC, run_at, id

-- name: mark_running --
-- A worker's starts, written before the jobs run; each must present the current token.
WITH v AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS v(id, token, started)
)
UPDATE jobs j SET status = 'running', started_at = to_timestamp(v.started)
FROM v WHERE j.id = v.id AND j.token = v.token AND j.status = 'assigned'
RETURNING j.id

-- name: report --
-- Batched outcomes; each row must present the job's current token, so a late or duplicate
-- report changes nothing. status: running | succeeded | pending (retry) | dead.
WITH v AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[], $5::float8[],
                         $6::text[], $7::text[], $8::float8[])
         AS v(id, token, status, started, finished, result, error, retry_in)
), upd AS (
    UPDATE jobs j SET
        status = v.status,
        started_at = COALESCE(to_timestamp(v.started), j.started_at),
        finished_at = CASE WHEN v.status IN ('succeeded', 'dead') THEN to_timestamp(v.finished) END,
        result = CASE WHEN v.status = 'succeeded' THEN v.result::jsonb ELSE j.result END,
        last_error = COALESCE(v.error, j.last_error),
        run_at = CASE WHEN v.status = 'pending'
                      THEN now() + make_interval(secs => v.retry_in) ELSE j.run_at END,
        worker_id = CASE WHEN v.status = 'pending' THEN NULL ELSE j.worker_id END
    FROM v
    WHERE j.id = v.id AND j.token = v.token AND j.status IN ('assigned', 'running')
      AND NOT (v.status = 'running' AND j.status = 'running')
    RETURNING j.id, j.token, v.status, v.started, v.finished
), a AS (
    UPDATE job_assignments ja SET
        started_at = COALESCE(to_timestamp(upd.started), ja.started_at),
        finished_at = CASE WHEN upd.status <> 'running' THEN to_timestamp(upd.finished) END,
        outcome = CASE upd.status WHEN 'running' THEN NULL WHEN 'pending' THEN 'failed'
                                  ELSE upd.status END
    FROM upd WHERE ja.job_id = upd.id AND ja.token = upd.token
), notified AS (
    SELECT pg_notify('qstack_jobs', '')
    WHERE EXISTS (SELECT 1 FROM upd WHERE status <> 'running')
)
SELECT upd.id, upd.status, (SELECT count(*) FROM notified) AS woke FROM upd

-- name: hand_back --
-- A stopping worker returns jobs it has not started; their attempt is not counted.
WITH r AS (
    UPDATE jobs SET status = 'pending', worker_id = NULL, attempts = GREATEST(attempts - 1, 0),
                    assigned_at = NULL
    WHERE worker_id = $1 AND status = 'assigned'
    RETURNING id, token
), a AS (
    UPDATE job_assignments ja SET outcome = 'returned', finished_at = now()
    FROM r WHERE ja.job_id = r.id AND ja.token = r.token
), notified AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.id, (SELECT count(*) FROM notified) AS woke FROM r

-- name: release_running --
-- A stopping worker returns jobs it started but could not finish in its grace period.
WITH r AS (
    UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
                    worker_id = NULL, last_error = $2,
                    finished_at = CASE WHEN attempts >= max_attempts THEN now() END
    WHERE worker_id = $1 AND status = 'running'
    RETURNING id, token, status
), a AS (
    UPDATE job_assignments ja SET outcome = 'interrupted', finished_at = now()
    FROM r WHERE ja.job_id = r.id AND ja.token = r.token
), notified AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.id, r.status, (SELECT count(*) FROM notified) AS woke FROM r

-- name: register_worker --
INSERT INTO queue_workers (id, hostname, pid, queues, concurrency, prefetch, status, version,
                           admin_url, config, started_at, last_heartbeat_at, updated_at,
                           requested)
VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9::jsonb, now(), now(), now(), NULL)
ON CONFLICT (id) DO UPDATE SET
    hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
    concurrency = EXCLUDED.concurrency, prefetch = EXCLUDED.prefetch, status = 'active',
    version = EXCLUDED.version, admin_url = EXCLUDED.admin_url, config = EXCLUDED.config,
    started_at = now(),
    last_heartbeat_at = now(), updated_at = now(), requested = NULL
RETURNING *

-- name: heartbeat --
UPDATE queue_workers SET last_heartbeat_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('active', 'draining')
RETURNING id, status, requested

-- name: insert_health_check --
INSERT INTO worker_health_checks (worker_id, status, cpu_percent, memory_bytes, in_flight,
                                  loop_lag_ms, details)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)

-- name: set_worker_status --
-- Only from the states named in $4, so that a late "stopped" never hides "failed".
UPDATE queue_workers SET status = $2, requested = $3, updated_at = now()
WHERE id = $1 AND status = ANY($4::text[])
RETURNING *

-- name: request_worker --
-- An operator's request (drain, stop), delivered in the worker's next heartbeat reply.
UPDATE queue_workers SET requested = $2, updated_at = now(),
    status = CASE WHEN $2 = 'drain' AND status = 'active' THEN 'draining' ELSE status END
WHERE id = $1 AND status IN ('active', 'draining')
RETURNING *

-- name: get_worker --
SELECT * FROM queue_workers WHERE id = $1

-- name: list_workers --
SELECT w.*, EXTRACT(EPOCH FROM now() - w.last_heartbeat_at)::float8 AS heartbeat_age_s,
       (SELECT count(*) FROM jobs j
         WHERE j.worker_id = w.id AND j.status IN ('assigned', 'running')) AS in_flight,
       h.status AS health, h.cpu_percent, h.memory_bytes, h.loop_lag_ms, h.checked_at,
       -- the worker's wall clock (sent with the heartbeat) against the database's
       ((h.details->>'sent_at')::float8 - EXTRACT(EPOCH FROM h.checked_at)::float8) * 1000
           AS clock_skew_ms
FROM queue_workers w
LEFT JOIN LATERAL (
    SELECT status, cpu_percent, memory_bytes, loop_lag_ms, checked_at, details
    FROM worker_health_checks hc WHERE hc.worker_id = w.id
    ORDER BY checked_at DESC LIMIT 1
) h ON true
WHERE ($1::text IS NULL OR w.status = $1)
ORDER BY w.started_at, w.id

-- name: worker_stats --
SELECT ja.worker_id,
       count(*) AS assigned,
       count(*) FILTER (WHERE ja.outcome = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE ja.outcome = 'failed') AS failed,
       count(*) FILTER (WHERE ja.outcome = 'dead') AS dead,
       count(*) FILTER (WHERE ja.outcome IS NULL) AS in_flight,
       COALESCE(avg(EXTRACT(EPOCH FROM ja.finished_at - ja.started_at))
           FILTER (WHERE ja.outcome = 'succeeded'), 0)::float8 AS avg_run_s
FROM job_assignments ja
GROUP BY ja.worker_id ORDER BY ja.worker_id

-- name: resource_stats --
-- Each worker's health checks over the last $1 seconds (idx_health_worker_time).
SELECT w.id AS worker_id, w.hostname, w.status, w.concurrency,
       count(*) AS checks,
       count(*) FILTER (WHERE h.status <> 'healthy') AS not_healthy,
       avg(h.cpu_percent)::float8 AS cpu_avg, max(h.cpu_percent)::float8 AS cpu_max,
       avg(h.memory_bytes)::float8 AS memory_avg, max(h.memory_bytes) AS memory_max,
       avg(h.in_flight)::float8 AS in_flight_avg, max(h.in_flight) AS in_flight_max,
       avg(h.loop_lag_ms)::float8 AS loop_lag_avg_ms, max(h.loop_lag_ms)::float8 AS loop_lag_max_ms,
       (array_agg(h.cpu_percent ORDER BY h.checked_at DESC))[1]::float8 AS cpu_last,
       (array_agg(h.memory_bytes ORDER BY h.checked_at DESC))[1] AS memory_last,
       max(h.checked_at) AS last_checked_at
FROM queue_workers w
JOIN worker_health_checks h
  ON h.worker_id = w.id AND h.checked_at > now() - make_interval(secs => $1)
GROUP BY w.id, w.hostname, w.status, w.concurrency
ORDER BY w.id

-- name: recent_health_checks --
SELECT * FROM worker_health_checks WHERE worker_id = $1 ORDER BY checked_at DESC LIMIT $2

-- name: acquire_lock --
-- Takes a free or expired lock (or re-takes one the owner already holds) with a new fencing
-- token; returns nothing while another owner's lease is live.
INSERT INTO distributed_locks AS l (lock_key, owner, worker_id, token, acquired_at, expires_at)
VALUES ($1, $2, $3, nextval('qstack_fencing_seq'), now(), now() + make_interval(secs => $4))
ON CONFLICT (lock_key) DO UPDATE SET
    owner = EXCLUDED.owner, worker_id = EXCLUDED.worker_id, token = EXCLUDED.token,
    acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner
RETURNING token, expires_at

-- name: renew_lock --
UPDATE distributed_locks SET expires_at = now() + make_interval(secs => $4)
WHERE lock_key = $1 AND owner = $2 AND token = $3 AND expires_at > now()
RETURNING token, expires_at

-- name: release_lock --
WITH d AS (
    DELETE FROM distributed_locks WHERE lock_key = $1 AND owner = $2 AND token = $3
    RETURNING lock_key
), n AS (
    SELECT pg_notify('qstack_locks', lock_key) FROM d
)
SELECT d.lock_key, (SELECT count(*) FROM n) AS woke FROM d

-- name: clear_stale_locks --
WITH d AS (
    DELETE FROM distributed_locks WHERE expires_at < now() - make_interval(secs => $1)
    RETURNING lock_key
), n AS (
    SELECT pg_notify('qstack_locks', lock_key) FROM d
)
SELECT d.lock_key, (SELECT count(*) FROM n) AS woke FROM d

-- name: get_lock --
SELECT *, (expires_at > now()) AS live,
       EXTRACT(EPOCH FROM expires_at - now())::float8 AS expires_in_s
FROM distributed_locks WHERE lock_key = $1

-- name: list_locks --
SELECT *, (expires_at > now()) AS live,
       EXTRACT(EPOCH FROM expires_at - now())::float8 AS expires_in_s
FROM distributed_locks ORDER BY lock_key

-- name: db_now --
SELECT now() AS now

-- name: liveness_candidates --
-- Workers the failover watcher judges, with ages on the database's clock.
SELECT id, status,
       EXTRACT(EPOCH FROM now() - last_heartbeat_at)::float8 AS heartbeat_age_s,
       EXTRACT(EPOCH FROM now() - started_at)::float8 AS registered_age_s
FROM queue_workers WHERE status IN ('active', 'draining')

-- name: held_advisory_locks --
-- Which of the given session-lock keys some session of this database holds.
SELECT k.key FROM unnest($1::bigint[]) AS k(key)
WHERE EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((l.classid::bigint << 32) | l.objid::bigint) = k.key)

-- name: db_uptime --
SELECT pg_postmaster_start_time() AS started_at,
       EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())::float8 AS uptime_s

-- name: fail_worker --
UPDATE queue_workers SET status = 'failed', requested = NULL, updated_at = now()
WHERE id = $1 AND status IN ('active', 'draining')
RETURNING id, EXTRACT(EPOCH FROM now() - last_heartbeat_at)::float8 AS heartbeat_age_s

-- name: recover_worker_jobs --
-- Everything a dead worker held goes back to pending. A running job's attempt counts (dead
-- when the attempts are used up; quarantined when workers died running it $3 times); a job
-- it had not started gets its attempt back, as in a hand-back. SET sees the old row.
WITH r AS (
    UPDATE jobs SET
        crash_count = crash_count + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
        attempts = CASE WHEN status = 'assigned' THEN GREATEST(attempts - 1, 0) ELSE attempts END,
        status = CASE
            WHEN status = 'running' AND crash_count + 1 >= $3 THEN 'dead'
            WHEN status = 'running' AND attempts >= max_attempts THEN 'dead'
            ELSE 'pending' END,
        last_error = CASE
            WHEN status = 'running' AND crash_count + 1 >= $3
            THEN 'quarantined: ' || (crash_count + 1) || ' workers died while running this job'
                 || ' (the last: ' || $1 || ')'
            ELSE $2 END,
        finished_at = CASE
            WHEN status = 'running' AND (crash_count + 1 >= $3 OR attempts >= max_attempts)
            THEN now() END,
        worker_id = NULL, started_at = NULL
    WHERE worker_id = $1 AND status IN ('assigned', 'running')
    RETURNING id, token, status, crash_count, queue_name
), a AS (
    UPDATE job_assignments ja SET outcome = 'lost', finished_at = now()
    FROM r WHERE ja.job_id = r.id AND ja.token = r.token AND ja.outcome IS NULL
), n AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.id, r.status, r.crash_count, r.queue_name, (SELECT count(*) FROM n) AS woke FROM r

-- name: release_worker_locks --
WITH d AS (
    DELETE FROM distributed_locks WHERE worker_id = $1 RETURNING lock_key
), n AS (
    SELECT pg_notify('qstack_locks', lock_key) FROM d
)
SELECT d.lock_key, (SELECT count(*) FROM n) AS woke FROM d

-- name: insert_failover_event --
INSERT INTO failover_events (event_type, failed_worker_id, target_worker_id, jobs_recovered,
                             jobs_dead, detection_ms, recovery_ms, details)
VALUES ($1, $2, NULL, $3, $4, $5, $6, $7::jsonb)
RETURNING *

-- name: list_failover_events --
SELECT * FROM failover_events
WHERE ($1::text IS NULL OR failed_worker_id = $1)
ORDER BY failover_at DESC, id DESC LIMIT $2

-- name: recover_timed_out --
-- Jobs running past timeout + grace on a live worker (a stuck thread, a lost report).
WITH r AS (
    UPDATE jobs SET
        status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
        last_error = 'timed out: running for more than ' || timeout || ' s + ' || $1
                     || ' s grace on worker ' || COALESCE(worker_id, '?'),
        finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
        worker_id = NULL, started_at = NULL
    WHERE status = 'running' AND started_at < now() - make_interval(secs => timeout + $1)
    RETURNING id, token, status
), a AS (
    UPDATE job_assignments ja SET outcome = 'timed_out', finished_at = now()
    FROM r WHERE ja.job_id = r.id AND ja.token = r.token AND ja.outcome IS NULL
), n AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.id, r.status, (SELECT count(*) FROM n) AS woke FROM r

-- name: orphan_holders --
-- Workers that are stopped, failed or unknown but still hold assigned or running jobs.
SELECT DISTINCT j.worker_id FROM jobs j
LEFT JOIN queue_workers w ON w.id = j.worker_id
WHERE j.status IN ('assigned', 'running') AND j.worker_id IS NOT NULL
  AND (w.id IS NULL OR w.status IN ('stopped', 'failed'))

-- name: snapshot_ensure --
INSERT INTO system_snapshots (name, body, computed_at) VALUES ($1, '', '-infinity')
ON CONFLICT (name) DO NOTHING

-- name: snapshot_lock --
-- Waits for a replica that is computing the same snapshot, then tells whether it is fresh.
SELECT body, computed_at > clock_timestamp() - make_interval(secs => $2) AS fresh
FROM system_snapshots WHERE name = $1 FOR UPDATE

-- name: snapshot_put --
UPDATE system_snapshots SET body = $2, computed_at = clock_timestamp() WHERE name = $1

-- name: paused_flags --
-- The queues that have been paused or resumed; list_queues merges them into queue_stats.
SELECT queue_name, paused FROM queue_settings

-- name: set_queue_paused --
-- Pause ($2 true) or resume a queue; a resume wakes the dispatcher so that the queue's due
-- jobs go out at once rather than at the next poll.
WITH s AS (
    INSERT INTO queue_settings AS qs (queue_name, paused, paused_at, updated_at)
    VALUES ($1, $2::boolean, CASE WHEN $2::boolean THEN now() END, now())
    ON CONFLICT (queue_name) DO UPDATE SET
        paused = EXCLUDED.paused, updated_at = now(),
        paused_at = CASE WHEN EXCLUDED.paused THEN COALESCE(
            CASE WHEN qs.paused THEN qs.paused_at END, now()) END
    RETURNING queue_name, paused, paused_at
), notified AS (
    SELECT pg_notify('qstack_jobs', '') WHERE NOT $2::boolean
)
SELECT s.*, (SELECT count(*) FROM notified) AS woke FROM s

-- name: retry_job --
-- A dead or cancelled job runs again, due now; when its attempts are used up it gets one
-- more. crash_count stays: a job quarantined for killing workers is quarantined again by
-- the next crash.
WITH r AS (
    UPDATE jobs SET status = 'pending', run_at = now(),
                    max_attempts = GREATEST(max_attempts, attempts + 1),
                    worker_id = NULL, assigned_at = NULL, started_at = NULL, finished_at = NULL
    WHERE id = $1 AND status IN ('dead', 'cancelled')
    RETURNING *
), notified AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.*, (SELECT count(*) FROM notified) AS woke FROM r

-- name: retry_jobs --
-- retry_job for up to $5 matching dead or cancelled jobs, oldest first ($1..$4: ids,
-- queue, status, task, each NULL for any).
WITH picked AS (
    SELECT id FROM jobs
    WHERE status IN ('dead', 'cancelled')
      AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
      AND ($2::text IS NULL OR queue_name = $2)
      AND ($3::text IS NULL OR status = $3)
      AND ($4::text IS NULL OR task_name = $4)
    ORDER BY id LIMIT $5
    FOR UPDATE SKIP LOCKED
), r AS (
    UPDATE jobs j SET status = 'pending', run_at = now(),
                      max_attempts = GREATEST(j.max_attempts, j.attempts + 1),
                      worker_id = NULL, assigned_at = NULL, started_at = NULL, finished_at = NULL
    FROM picked WHERE j.id = picked.id AND j.status IN ('dead', 'cancelled')
    RETURNING j.id
), notified AS (
    SELECT pg_notify('qstack_jobs', '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.id, (SELECT count(*) FROM notified) AS woke FROM r ORDER BY r.id

-- name: cancel_jobs --
-- cancel_job for up to $5 matching pending or assigned jobs, oldest first (their assignment
-- rows closed next, as cancel_job's are). SKIP LOCKED: a job a dispatch pass holds this
-- instant is left alone (the pass may be assigning it).
WITH picked AS (
    SELECT id FROM jobs
    WHERE status IN ('pending', 'assigned')
      AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
      AND ($2::text IS NULL OR queue_name = $2)
      AND ($3::text IS NULL OR status = $3)
      AND ($4::text IS NULL OR task_name = $4)
    ORDER BY id LIMIT $5
    FOR UPDATE SKIP LOCKED
), c AS (
    UPDATE jobs j SET status = 'cancelled', finished_at = now(), worker_id = NULL
    FROM picked WHERE j.id = picked.id AND j.status IN ('pending', 'assigned')
    RETURNING j.id, j.token
)
SELECT id, token FROM c ORDER BY id

-- name: throughput --
-- Outcomes per second of the last $1 seconds (the current one last), zeros included, by
-- finished_at. dead: the attempt after which the job was dead, whether the worker said so
-- or the failover watcher found it out of attempts (lost, timed out, interrupted: the job
-- is dead and this was its last assignment). The bounds are written out, not read from a
-- CTE, and the rare failover outcomes have a branch of their own, so that the planner sees
-- how few rows each part holds (an estimate over the whole table would also switch on JIT,
-- which costs more than the query).
WITH outcomes AS (
    SELECT date_trunc('second', ja.finished_at) AS t, ja.outcome
    FROM job_assignments ja
    WHERE ja.finished_at >= date_trunc('second', now()) - make_interval(secs => $1 - 1)
      AND ja.finished_at < date_trunc('second', now()) + interval '1 second'
      AND ja.outcome IN ('succeeded', 'failed', 'dead')
    UNION ALL
    SELECT date_trunc('second', ja.finished_at), 'dead'
    FROM job_assignments ja JOIN jobs j ON j.id = ja.job_id AND j.token = ja.token
    WHERE ja.finished_at >= date_trunc('second', now()) - make_interval(secs => $1 - 1)
      AND ja.finished_at < date_trunc('second', now()) + interval '1 second'
      AND ja.outcome IN ('lost', 'timed_out', 'interrupted') AND j.status = 'dead'
), per_second AS (
    SELECT t, count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
              count(*) FILTER (WHERE outcome = 'failed') AS failed,
              count(*) FILTER (WHERE outcome = 'dead') AS dead
    FROM outcomes GROUP BY t
)
SELECT EXTRACT(EPOCH FROM s.t)::float8 AS t, COALESCE(p.succeeded, 0) AS succeeded,
       COALESCE(p.failed, 0) AS failed, COALESCE(p.dead, 0) AS dead
FROM generate_series(date_trunc('second', now()) - make_interval(secs => $1 - 1),
                     date_trunc('second', now()), interval '1 second') AS s(t)
LEFT JOIN per_second p ON p.t = s.t
ORDER BY s.t

-- name: start_latency --
-- Enqueue-to-start of the attempts that started in the last $1 seconds: started_at minus
-- the due time at assignment, in ms. A start is in job_assignments once the attempt has an
-- outcome, and an attempt finishes after it starts: the finished_at index bounds the scan.
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
       count(*) AS samples
FROM (
    SELECT GREATEST(EXTRACT(EPOCH FROM ja.started_at - ja.run_at) * 1000, 0)::float8 AS ms
    FROM job_assignments ja
    WHERE ja.finished_at >= date_trunc('second', now()) - make_interval(secs => $1 - 1)
      AND ja.started_at >= date_trunc('second', now()) - make_interval(secs => $1 - 1)
      AND ja.run_at IS NOT NULL
) s

-- name: worker_assignments --
SELECT job_id, queue_name, token, assigned_at, started_at, finished_at, outcome
FROM job_assignments WHERE worker_id = $1
ORDER BY assigned_at DESC, id DESC LIMIT $2

-- retention --
-- Clean-ups delete in bounded batches (the caller loops until a batch comes back short), so
-- a large backlog never holds many row locks or one long transaction. The rows to go are
-- picked first and reached as `id = ANY(ARRAY(...))`: primary-key lookups, never a join
-- that the planner could turn into a scan of the whole table per batch.

-- name: cleanup_health_checks --
-- Up to $2 health checks older than $1 seconds. Every status is named so that
-- idx_health_status_time (status, checked_at) serves it as one range scan per status.
WITH d AS (
    DELETE FROM worker_health_checks WHERE id = ANY(ARRAY(
        SELECT id FROM worker_health_checks
        WHERE status = ANY('{healthy,degraded,unhealthy}'::text[])
          AND checked_at < now() - make_interval(secs => $1)
        LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS deleted FROM d

-- name: cleanup_failover_events --
-- Up to $2 failover events older than $1 seconds. No index leads with failover_at: the
-- table holds a row per dead worker (and a held-back pass a minute at most), so it stays small.
WITH d AS (
    DELETE FROM failover_events WHERE id = ANY(ARRAY(
        SELECT id FROM failover_events
        WHERE failover_at < now() - make_interval(secs => $1)
        LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS deleted FROM d

-- name: cleanup_gone_job_assignments --
-- Up to $2 assignment rows after id $1 whose job no longer exists, in id order; last_id is
-- where the next statement goes on. With none (or few) to delete this is one anti-join pass.
WITH d AS (
    DELETE FROM job_assignments WHERE id = ANY(ARRAY(
        SELECT ja.id FROM job_assignments ja
        WHERE ja.id > $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = ja.job_id)
        ORDER BY ja.id LIMIT $2))
    RETURNING id
)
SELECT count(*) AS deleted, max(id) AS last_id FROM d

-- name: close_orphaned_assignments --
-- Closes up to $1 open assignment rows (no outcome yet; idx_assignment_finished finds the
-- NULL finished_at) whose job has moved on: it is not assigned or running under the row's
-- token. One statement, one snapshot: a dispatch pass writes a job's new token and its
-- assignment row in one statement, so a live row is never seen without its job; and the
-- outer WHERE is re-checked on the row's latest version, so a report that closed the row
-- meanwhile keeps its outcome.
WITH c AS (
    UPDATE job_assignments ja SET finished_at = now(), outcome = 'orphaned'
    WHERE ja.id = ANY(ARRAY(
        SELECT o.id FROM job_assignments o
        WHERE o.finished_at IS NULL AND o.outcome IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM jobs j
              WHERE j.id = o.job_id AND j.token = o.token AND j.status IN ('assigned', 'running'))
        LIMIT $1))
      AND ja.finished_at IS NULL AND ja.outcome IS NULL
    RETURNING 1
)
SELECT count(*) AS closed FROM c

-- name: cleanup_finished_jobs --
-- The next $4 jobs after id $1 (the primary key: no index on the hot jobs table for this);
-- those in a finished state of $3 whose finished_at is more than $2 seconds old are deleted
-- with their assignment rows. A job retried meanwhile is re-checked on its latest version and
-- stays. past_cutoff: the chunk was created after the cutoff; ids grow with created_at and a
-- job finishes after it is created, so nothing further on can be due (a job an overlapping
-- enqueue put out of order goes at the next run).
WITH chunk AS (
    SELECT id, created_at, status, finished_at FROM jobs WHERE id > $1 ORDER BY id LIMIT $4
), d AS (
    DELETE FROM jobs j
    WHERE j.id = ANY(ARRAY(
            SELECT id FROM chunk
            WHERE status = ANY($3::text[])
              AND finished_at < now() - make_interval(secs => $2)))
      AND j.status = ANY($3::text[]) AND j.status IN ('succeeded', 'dead', 'cancelled')
      AND j.finished_at < now() - make_interval(secs => $2)
    RETURNING j.id
), a AS (
    DELETE FROM job_assignments WHERE job_id = ANY(ARRAY(SELECT id FROM d))
)
SELECT (SELECT max(id) FROM chunk) AS last_id,
       (SELECT min(created_at) FROM chunk) >= now() - make_interval(secs => $2) AS past_cutoff,
       (SELECT count(*) FROM d) AS deleted

-- backup and restore --

-- name: backup_now --
-- The snapshot's time (now() is the transaction's start).
SELECT now()

-- name: backup_columns --
-- The columns of the tables $1 in the current schema, in order: type, whether it is an
-- identity column, and its place in the primary key (NULL: not in it).
SELECT t.relname AS table_name, a.attname AS column_name,
       format_type(a.atttypid, NULL) AS data_type, a.attidentity <> '' AS is_identity,
       array_position(pk.indkey::int2[], a.attnum) AS pk_position
FROM pg_class t
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = current_schema()
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_index pk ON pk.indrelid = t.oid AND pk.indisprimary
WHERE t.relkind IN ('r', 'p') AND t.relname = ANY($1::text[])
ORDER BY t.relname, a.attnum

-- name: backup_schema --
SELECT version, name FROM schema_migrations ORDER BY version

-- name: backup_sequences --
-- The last value each sequence of the tables $1 handed out (NULL: none yet), identity
-- columns named "table.column", and the fencing tokens' sequence.
SELECT t.relname || '.' || a.attname AS name,
       pg_sequence_last_value(
           pg_get_serial_sequence(format('%I.%I', n.nspname, t.relname), a.attname)::regclass
       ) AS value
FROM pg_class t
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = current_schema()
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE t.relkind IN ('r', 'p') AND t.relname = ANY($1::text[]) AND a.attidentity <> ''
UNION ALL
SELECT 'qstack_fencing_seq', pg_sequence_last_value('qstack_fencing_seq'::regclass)
ORDER BY name

-- name: restore_lock_timeout --
-- A restore waits this long for the tables' locks (a service writing to them), then fails.
SELECT set_config('lock_timeout', '30s', true)

-- name: restore_fencing_floor --
-- The largest fencing token restored: the sequence goes at least this far.
SELECT GREATEST((SELECT max(token) FROM jobs), (SELECT max(token) FROM job_assignments),
                (SELECT max(token) FROM distributed_locks))

-- name: identity_sequence --
SELECT pg_get_serial_sequence(format('%I.%I', current_schema(), $1::text), $2)

-- name: sequence_exists --
SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND relkind = 'S')

-- name: restore_sequence --
-- Move sequence $1 up to $2, never down: its next value is above every restored one.
SELECT setval($1::regclass,
              GREATEST($2::bigint, COALESCE(pg_sequence_last_value($1::regclass), 0)))

-- performance stats --

-- name: perf_server --
SELECT current_setting('server_version') AS version, version() AS version_full,
       current_database() AS database, current_schema() AS schema,
       pg_database_size(current_database()) AS database_bytes,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
           AS connections,
       current_setting('max_connections')::int AS max_connections,
       d.numbackends AS database_connections,
       CASE WHEN d.blks_hit + d.blks_read > 0
            THEN d.blks_hit::float8 / (d.blks_hit + d.blks_read) END AS cache_hit_ratio,
       d.xact_commit AS commits, d.xact_rollback AS rollbacks, d.deadlocks,
       d.temp_files, d.temp_bytes, d.stats_reset, pg_postmaster_start_time() AS started_at
FROM pg_stat_database d WHERE d.datname = current_database()

-- name: perf_tables --
-- The tables $1 of the current schema, largest first. estimated_rows is the planner's
-- (reltuples, from the last ANALYZE or VACUUM); live_rows the statistics collector's count.
SELECT c.relname AS table,
       CASE WHEN c.reltuples < 0 THEN s.n_live_tup ELSE c.reltuples::bigint END
           AS estimated_rows,
       pg_total_relation_size(c.oid) AS total_bytes, pg_relation_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       s.seq_scan, s.idx_scan, s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])
ORDER BY pg_total_relation_size(c.oid) DESC, c.relname

-- name: perf_indexes --
SELECT s.relname AS table, s.indexrelname AS index, s.idx_scan AS scans,
       s.idx_tup_read AS tuples_read, pg_relation_size(s.indexrelid) AS size_bytes
FROM pg_stat_user_indexes s
WHERE s.schemaname = current_schema() AND s.relname = ANY($1::text[])
ORDER BY s.relname, s.indexrelname

-- name: perf_statements_schema --
-- Where pg_stat_statements is installed in this database (no row: it is not).
SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'

-- name: perf_use_schema --
-- For the rest of the transaction, also look in schema $1 (the extension's).
SELECT set_config('search_path', current_setting('search_path') || ', ' || quote_ident($1),
                  true)

-- name: perf_statements --
-- The $1 slowest statements of this database by mean time.
SELECT queryid, query, calls, total_exec_time AS total_ms, mean_exec_time AS mean_ms,
       max_exec_time AS max_ms, rows
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY mean_exec_time DESC LIMIT $1

-- name: perf_ping --
SELECT 1
