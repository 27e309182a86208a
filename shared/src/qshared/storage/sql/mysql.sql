-- Named queries of the MySQL dialect (MySQL 8, MariaDB 10.6+), beside postgres.sql: the same
-- names where the dialects can share them (tests/unit/test_queries.py lists the others).
-- Each block starts with `-- name: NAME --`; parameters are pyformat (%(name)s), so a
-- literal percent sign is written %%.
--
-- What PostgreSQL does in one statement with UPDATE ... RETURNING and data-modifying CTEs
-- is here a short transaction: lock the rows with SELECT ... FOR UPDATE, change them by
-- primary key, read them back (MySQL 8 has no RETURNING at all, MariaDB none on UPDATE).
-- A single-table UPDATE assigns left to right and a later assignment sees the new value of
-- an earlier column: where an expression needs an old value, its column comes later.
-- pg_notify becomes an INSERT into qstack_notifications (query `notify`), in the same
-- transaction. Intervals are passed in microseconds (%(..._us)s), epoch times as numbers.

-- name: notify --
INSERT INTO qstack_notifications (channel) VALUES (%(channel)s)

-- name: notify_if_changed --
-- A wake-up only when the previous statement on this connection changed rows.
INSERT INTO qstack_notifications (channel) SELECT %(channel)s FROM DUAL WHERE ROW_COUNT() > 0

-- name: next_tokens --
-- Hands out %(n)s fencing tokens (the last one is LAST_INSERT_ID()); strictly increasing
-- across lock keys and assignments, like nextval('qstack_fencing_seq').
UPDATE qstack_sequences SET value = LAST_INSERT_ID(value + %(n)s)
WHERE name = 'qstack_fencing_seq'

-- name: enqueue --
-- One job; the script of a batch has one such statement per job. A unique_key seen before
-- inserts nothing and makes LAST_INSERT_ID() the first job's id (affected rows: 0).
INSERT INTO jobs (queue_name, task_name, payload, priority, max_attempts, timeout, run_at,
                  unique_key, lock_key)
VALUES (%(queue_name)s, %(task_name)s, %(payload)s, %(priority)s, %(max_attempts)s,
        %(timeout)s, NOW(6) + INTERVAL %(delay_us)s MICROSECOND, %(unique_key)s, %(lock_key)s)
ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)

-- name: get_job --
SELECT * FROM jobs WHERE id = %(id)s

-- name: job_assignments --
SELECT * FROM job_assignments WHERE job_id = %(id)s ORDER BY id

-- name: cancel_job --
-- Only a job that has not started can be cancelled: locked here, changed by cancel_by_ids.
SELECT id, token FROM jobs WHERE id = %(id)s AND status IN ('pending', 'assigned') FOR UPDATE

-- name: cancel_by_ids --
UPDATE jobs SET status = 'cancelled', finished_at = NOW(6), worker_id = NULL
WHERE id IN %(ids)s AND status IN ('pending', 'assigned')

-- name: close_cancelled_assignments --
-- The assignment rows of the jobs just cancelled (under the tokens they had). READ COMMITTED:
-- when the cancel waited for a dispatch pass that was assigning the job, this statement
-- sees the row that pass wrote.
UPDATE job_assignments ja
JOIN jobs j ON j.id = ja.job_id AND j.token = ja.token
SET ja.outcome = 'cancelled', ja.finished_at = NOW(6)
WHERE j.id IN %(ids)s AND ja.outcome IS NULL

-- name: list_jobs --
SELECT * FROM jobs
WHERE (%(queue)s IS NULL OR queue_name = %(queue)s)
  AND (%(status)s IS NULL OR status = %(status)s)
  AND (%(task)s IS NULL OR task_name = %(task)s)
  AND (%(before_id)s IS NULL OR id < %(before_id)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: queue_stats --
SELECT queue_name,
       COUNT(CASE WHEN status = 'pending' AND run_at <= NOW(6) THEN 1 END) AS pending,
       COUNT(CASE WHEN status = 'pending' AND run_at > NOW(6) THEN 1 END) AS scheduled,
       COUNT(CASE WHEN status = 'assigned' THEN 1 END) AS assigned,
       COUNT(CASE WHEN status = 'running' THEN 1 END) AS running,
       COUNT(CASE WHEN status = 'succeeded' THEN 1 END) AS succeeded,
       COUNT(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 END) AS failed,
       COUNT(CASE WHEN status = 'dead' THEN 1 END) AS dead,
       COUNT(CASE WHEN status = 'cancelled' THEN 1 END) AS cancelled,
       COALESCE(TIMESTAMPDIFF(MICROSECOND,
                              MIN(CASE WHEN status = 'pending' AND run_at <= NOW(6) THEN run_at END),
                              NOW(6)) / 1e6, 0e0) AS oldest_pending_age_s
FROM jobs GROUP BY queue_name ORDER BY queue_name

-- name: worker_capacity --
-- Workers that may receive jobs, with what they hold now. A count per status, each on both
-- parts of idx_jobs_worker_active: with `status IN (...)` against the outer row, InnoDB
-- looked up the worker's rows by worker_id alone and read every job it had ever run (MariaDB
-- 10.11: a thousand rows per worker per pass after a few thousand jobs), and by its
-- statistics the optimizer may take the dispatch index instead (every in-flight job).
SELECT w.id, w.queues, w.concurrency, w.prefetch, w.admin_url,
       (SELECT COUNT(*) FROM jobs j FORCE INDEX (idx_jobs_worker_active)
         WHERE j.worker_id = w.id AND j.status = 'assigned')
     + (SELECT COUNT(*) FROM jobs j FORCE INDEX (idx_jobs_worker_active)
         WHERE j.worker_id = w.id AND j.status = 'running') AS in_flight
FROM queue_workers w
WHERE w.status = 'active' AND w.last_heartbeat_at > NOW(6) - INTERVAL %(ttl_us)s MICROSECOND

-- name: lock_workers --
-- Share-locks the chosen workers for the dispatch transaction: a worker stopping at the
-- same moment waits for it, then sees (and hands back) what it was given.
SELECT id FROM queue_workers WHERE id IN %(ids)s AND status = 'active' LOCK IN SHARE MODE

-- name: pick_due --
-- One queue's part of a pass, first half: which jobs are due, by a plain read (READ
-- COMMITTED: no locks). A job whose lock_key another job holds (assigned or running:
-- lock_key_active) waits, and so does every job of a paused queue. Not one locking
-- statement: InnoDB kept the lock on every row a locking scan passed, due or not, until the
-- pass committed (MariaDB 10.11, READ COMMITTED), and ordered by priority first the
-- dispatch index cannot stop at NOW, so such a scan locked every delayed job of the queue
-- (a bulk cancel then skipped them, and an update of one waited for the pass). Read in a
-- derived table or in a SET of the pass, the rows were locked as well; hence two
-- statements (test_a_dispatch_pass_locks_only_the_due_jobs_it_picked).
SELECT c.id FROM jobs c
WHERE c.status = 'pending' AND c.queue_name = %(queue)s AND c.run_at <= NOW(6)
  AND NOT EXISTS (SELECT 1 FROM queue_settings s WHERE s.queue_name = %(queue)s AND s.paused)
  AND (c.lock_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM jobs a WHERE a.lock_key_active = c.lock_key))
ORDER BY c.priority DESC, c.run_at, c.id
LIMIT %(limit)s

-- name: pick_pending --
-- Second half: locks the due jobs pick_due found (%(ids)s), by primary key, and returns
-- those still pending (SKIP LOCKED: one a cancel holds this instant is left for the next
-- pass).
SELECT p.id, p.queue_name, p.priority, p.run_at, p.lock_key FROM jobs p
WHERE p.id IN %(ids)s AND p.status = 'pending'
ORDER BY p.priority DESC, p.run_at, p.id
FOR UPDATE SKIP LOCKED

-- name: assign --
-- One job of a pass; it was locked by pick_pending, so the guard only documents the state.
-- Its token: next_tokens ran first in the same script and made LAST_INSERT_ID() the last of
-- the pass's new tokens; the job %(back)s places from the end takes LAST_INSERT_ID() - back.
UPDATE jobs SET status = 'assigned', worker_id = %(worker_id)s,
                token = LAST_INSERT_ID() - %(back)s,
                attempts = attempts + 1, assigned_at = NOW(6), started_at = NULL,
                finished_at = NULL
WHERE id = %(id)s AND status = 'pending'

-- name: insert_assignments --
-- The assignment rows of the jobs the pass just assigned, as the jobs now are.
INSERT INTO job_assignments (job_id, token, worker_id, queue_name, run_at)
SELECT id, token, worker_id, queue_name, run_at FROM jobs
WHERE id IN %(ids)s AND status = 'assigned'
ORDER BY id

-- name: next_due_in --
-- Seconds (on the database's clock) until the next pending job falls due. Jobs that fell
-- due in the last 10 ms count too (as 0 or less): one may have come due just after a pass
-- looked, and must not wait for the next poll.
SELECT TIMESTAMPDIFF(MICROSECOND, NOW(6), MIN(run_at)) / 1e6 AS due_in
FROM jobs WHERE status = 'pending' AND run_at > NOW(6) - INTERVAL 10000 MICROSECOND

-- name: claim_assigned --
-- A worker takes the jobs assigned to it that it does not hold yet (%(held)s: a JSON array).
SELECT id, token, queue_name, task_name, payload, priority, attempts, max_attempts, timeout,
       created_at, run_at
FROM jobs
WHERE worker_id = %(worker_id)s AND status = 'assigned'
  AND id NOT IN (SELECT h.id FROM JSON_TABLE(%(held)s, '$[*]' COLUMNS (id BIGINT PATH '$')) h)
ORDER BY priority DESC, run_at, id

-- name: mark_running --
-- One start of a batch, written before the job runs; it must present the current token.
-- Affected rows tell whether it moved (the status always changes when it does).
UPDATE jobs SET status = 'running', started_at = FROM_UNIXTIME(%(started)s)
WHERE id = %(id)s AND token = %(token)s AND status = 'assigned'

-- name: report --
-- One outcome of a batch; it must present the job's current token, so a late or duplicate
-- report changes nothing. status: running | succeeded | pending (retry) | dead. The status
-- always changes when the guard lets it through, so affected rows say whether it applied.
UPDATE jobs SET
    status = %(status)s,
    started_at = COALESCE(FROM_UNIXTIME(%(started)s), started_at),
    finished_at = CASE WHEN %(status)s IN ('succeeded', 'dead')
                       THEN FROM_UNIXTIME(%(finished)s) END,
    result = CASE WHEN %(status)s = 'succeeded' THEN %(result)s ELSE result END,
    last_error = COALESCE(%(error)s, last_error),
    run_at = CASE WHEN %(status)s = 'pending'
                  THEN NOW(6) + INTERVAL %(retry_us)s MICROSECOND ELSE run_at END,
    worker_id = CASE WHEN %(status)s = 'pending' THEN NULL ELSE worker_id END
WHERE id = %(id)s AND token = %(token)s AND status IN ('assigned', 'running')
  AND NOT (%(status)s = 'running' AND status = 'running')

-- name: report_assignment --
-- The assignment row of an outcome that applied.
UPDATE job_assignments SET
    started_at = COALESCE(FROM_UNIXTIME(%(started)s), started_at),
    finished_at = CASE WHEN %(status)s <> 'running' THEN FROM_UNIXTIME(%(finished)s) END,
    outcome = CASE %(status)s WHEN 'running' THEN NULL WHEN 'pending' THEN 'failed'
                              ELSE %(status)s END
WHERE job_id = %(id)s AND token = %(token)s

-- name: hand_back --
-- A stopping worker returns jobs it has not started; their attempt is not counted.
SELECT id, token FROM jobs WHERE worker_id = %(worker_id)s AND status = 'assigned'
ORDER BY id FOR UPDATE

-- name: hand_back_by_ids --
UPDATE jobs SET status = 'pending', worker_id = NULL, attempts = GREATEST(attempts - 1, 0),
                assigned_at = NULL
WHERE id IN %(ids)s AND status = 'assigned'

-- name: close_assignments --
-- The open assignment rows of the jobs %(ids)s (under the tokens they hold) get an outcome.
UPDATE job_assignments ja
JOIN jobs j ON j.id = ja.job_id AND j.token = ja.token
SET ja.outcome = %(outcome)s, ja.finished_at = NOW(6)
WHERE j.id IN %(ids)s

-- name: release_running --
-- A stopping worker returns jobs it started but could not finish in its grace period.
SELECT id, token FROM jobs WHERE worker_id = %(worker_id)s AND status = 'running'
ORDER BY id FOR UPDATE

-- name: release_running_by_ids --
-- last_error and finished_at before status and worker_id: each reads the old row.
UPDATE jobs SET last_error = %(reason)s,
                finished_at = CASE WHEN attempts >= max_attempts THEN NOW(6) END,
                status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
                worker_id = NULL
WHERE id IN %(ids)s AND status = 'running'

-- name: job_states --
SELECT id, status, crash_count, queue_name FROM jobs WHERE id IN %(ids)s ORDER BY id

-- name: register_worker --
INSERT INTO queue_workers (id, hostname, pid, queues, concurrency, prefetch, status, version,
                           admin_url, config, started_at, last_heartbeat_at, updated_at,
                           requested)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(prefetch)s, 'active',
        %(version)s, %(admin_url)s, %(config)s, NOW(6), NOW(6), NOW(6), NULL)
ON DUPLICATE KEY UPDATE
    hostname = %(hostname)s, pid = %(pid)s, queues = %(queues)s,
    concurrency = %(concurrency)s, prefetch = %(prefetch)s, status = 'active',
    version = %(version)s, admin_url = %(admin_url)s, config = %(config)s,
    started_at = NOW(6), last_heartbeat_at = NOW(6), updated_at = NOW(6), requested = NULL

-- name: heartbeat --
UPDATE queue_workers SET last_heartbeat_at = NOW(6), updated_at = NOW(6)
WHERE id = %(id)s AND status IN ('active', 'draining')

-- name: heartbeat_reply --
SELECT id, status, requested FROM queue_workers
WHERE id = %(id)s AND status IN ('active', 'draining')

-- name: insert_health_check --
-- Only for a worker the heartbeat found active or draining (this statement checks again).
INSERT INTO worker_health_checks (worker_id, status, cpu_percent, memory_bytes, in_flight,
                                  loop_lag_ms, details)
SELECT %(id)s, %(status)s, %(cpu_percent)s, %(memory_bytes)s, %(in_flight)s,
       %(loop_lag_ms)s, %(details)s
FROM queue_workers WHERE id = %(id)s AND status IN ('active', 'draining')

-- name: lock_worker --
-- The worker's row, locked, if it is in one of the states %(from_states)s.
SELECT id FROM queue_workers WHERE id = %(id)s AND status IN %(from_states)s FOR UPDATE

-- name: set_worker_status --
UPDATE queue_workers SET status = %(status)s, requested = %(requested)s, updated_at = NOW(6)
WHERE id = %(id)s AND status IN %(from_states)s

-- name: request_worker --
-- An operator's request (drain, stop), delivered in the worker's next heartbeat reply.
UPDATE queue_workers SET requested = %(request)s, updated_at = NOW(6),
    status = CASE WHEN %(request)s = 'drain' AND status = 'active' THEN 'draining' ELSE status END
WHERE id = %(id)s AND status IN ('active', 'draining')

-- name: get_worker --
SELECT * FROM queue_workers WHERE id = %(id)s

-- name: list_workers --
-- Each worker with its latest health check (idx_health_worker_time, read backwards).
SELECT w.*, TIMESTAMPDIFF(MICROSECOND, w.last_heartbeat_at, NOW(6)) / 1e6 AS heartbeat_age_s,
       (SELECT COUNT(*) FROM jobs j FORCE INDEX (idx_jobs_worker_active)
         WHERE j.worker_id = w.id AND j.status = 'assigned')
     + (SELECT COUNT(*) FROM jobs j FORCE INDEX (idx_jobs_worker_active)
         WHERE j.worker_id = w.id AND j.status = 'running') AS in_flight,  -- see worker_capacity
       h.status AS health, h.cpu_percent, h.memory_bytes, h.loop_lag_ms, h.checked_at,
       -- the worker's wall clock (sent with the heartbeat) against the database's
       (JSON_VALUE(h.details, '$.sent_at') - UNIX_TIMESTAMP(h.checked_at)) * 1000e0
           AS clock_skew_ms
FROM queue_workers w
LEFT JOIN worker_health_checks h ON h.id = (
    SELECT hc.id FROM worker_health_checks hc WHERE hc.worker_id = w.id
    ORDER BY hc.checked_at DESC, hc.id DESC LIMIT 1)
WHERE (%(status)s IS NULL OR w.status = %(status)s)
ORDER BY w.started_at, w.id

-- name: worker_stats --
SELECT ja.worker_id,
       COUNT(*) AS assigned,
       COUNT(CASE WHEN ja.outcome = 'succeeded' THEN 1 END) AS succeeded,
       COUNT(CASE WHEN ja.outcome = 'failed' THEN 1 END) AS failed,
       COUNT(CASE WHEN ja.outcome = 'dead' THEN 1 END) AS dead,
       COUNT(CASE WHEN ja.outcome IS NULL THEN 1 END) AS in_flight,
       COALESCE(AVG(CASE WHEN ja.outcome = 'succeeded'
                         THEN TIMESTAMPDIFF(MICROSECOND, ja.started_at, ja.finished_at) / 1e6
                    END), 0e0) AS avg_run_s
FROM job_assignments ja
GROUP BY ja.worker_id ORDER BY ja.worker_id

-- name: resource_stats --
-- Each worker's health checks over the last %(window_us)s (idx_health_worker_time); the
-- latest values come from the newest check of the window (l).
SELECT w.id AS worker_id, w.hostname, w.status, w.concurrency,
       COUNT(*) AS checks,
       COUNT(CASE WHEN h.status <> 'healthy' THEN 1 END) AS not_healthy,
       AVG(h.cpu_percent) AS cpu_avg, MAX(h.cpu_percent) AS cpu_max,
       AVG(h.memory_bytes) * 1e0 AS memory_avg, MAX(h.memory_bytes) AS memory_max,
       AVG(h.in_flight) * 1e0 AS in_flight_avg, MAX(h.in_flight) AS in_flight_max,
       AVG(h.loop_lag_ms) AS loop_lag_avg_ms, MAX(h.loop_lag_ms) AS loop_lag_max_ms,
       MAX(l.cpu_percent) AS cpu_last, MAX(l.memory_bytes) AS memory_last,
       MAX(h.checked_at) AS last_checked_at
FROM queue_workers w
JOIN worker_health_checks h
  ON h.worker_id = w.id AND h.checked_at > NOW(6) - INTERVAL %(window_us)s MICROSECOND
LEFT JOIN worker_health_checks l ON l.id = (
    SELECT x.id FROM worker_health_checks x
    WHERE x.worker_id = w.id AND x.checked_at > NOW(6) - INTERVAL %(window_us)s MICROSECOND
    ORDER BY x.checked_at DESC, x.id DESC LIMIT 1)
GROUP BY w.id, w.hostname, w.status, w.concurrency
ORDER BY w.id

-- name: recent_health_checks --
SELECT * FROM worker_health_checks WHERE worker_id = %(id)s
ORDER BY checked_at DESC, id DESC LIMIT %(limit)s

-- name: acquire_lock --
-- Takes a free or expired lock (or re-takes one the owner already holds) with the token
-- next_tokens just handed out on this connection (LAST_INSERT_ID()); the row keeps its
-- owner while another owner's lease is live. `token` is assigned first: the columns after
-- it change only when it became this acquisition's.
INSERT INTO distributed_locks (lock_key, owner, worker_id, token, acquired_at, expires_at)
VALUES (%(key)s, %(owner)s, %(worker_id)s, LAST_INSERT_ID(), NOW(6),
        NOW(6) + INTERVAL %(ttl_us)s MICROSECOND)
ON DUPLICATE KEY UPDATE
    token = CASE WHEN expires_at <= NOW(6) OR owner = %(owner)s THEN LAST_INSERT_ID()
                 ELSE token END,
    owner = CASE WHEN token = LAST_INSERT_ID() THEN %(owner)s ELSE owner END,
    worker_id = CASE WHEN token = LAST_INSERT_ID() THEN %(worker_id)s ELSE worker_id END,
    acquired_at = CASE WHEN token = LAST_INSERT_ID() THEN NOW(6) ELSE acquired_at END,
    expires_at = CASE WHEN token = LAST_INSERT_ID()
                      THEN NOW(6) + INTERVAL %(ttl_us)s MICROSECOND ELSE expires_at END

-- name: acquired_lock --
-- The lock as acquire_lock left it, if the acquisition's token is on it.
SELECT token, expires_at FROM distributed_locks
WHERE lock_key = %(key)s AND token = LAST_INSERT_ID()

-- name: renew_lock --
UPDATE distributed_locks SET expires_at = NOW(6) + INTERVAL %(ttl_us)s MICROSECOND
WHERE lock_key = %(key)s AND owner = %(owner)s AND token = %(token)s AND expires_at > NOW(6)

-- name: renewed_lock --
-- The lease renew_lock extended; nothing when it had lapsed (or was another's).
SELECT token, expires_at FROM distributed_locks
WHERE lock_key = %(key)s AND owner = %(owner)s AND token = %(token)s AND expires_at > NOW(6)

-- name: release_lock --
DELETE FROM distributed_locks WHERE lock_key = %(key)s AND owner = %(owner)s AND token = %(token)s

-- name: clear_stale_locks --
SELECT lock_key FROM distributed_locks
WHERE expires_at < NOW(6) - INTERVAL %(grace_us)s MICROSECOND
ORDER BY lock_key FOR UPDATE

-- name: delete_locks --
DELETE FROM distributed_locks WHERE lock_key IN %(keys)s

-- name: get_lock --
SELECT *, (expires_at > NOW(6)) AS live,
       TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) / 1e6 AS expires_in_s
FROM distributed_locks WHERE lock_key = %(key)s

-- name: list_locks --
SELECT *, (expires_at > NOW(6)) AS live,
       TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) / 1e6 AS expires_in_s
FROM distributed_locks ORDER BY lock_key

-- name: db_now --
SELECT NOW(6) AS now

-- name: liveness_candidates --
-- Workers the failover watcher judges, with ages on the database's clock.
SELECT id, status,
       TIMESTAMPDIFF(MICROSECOND, last_heartbeat_at, NOW(6)) / 1e6 AS heartbeat_age_s,
       TIMESTAMPDIFF(MICROSECOND, started_at, NOW(6)) / 1e6 AS registered_age_s
FROM queue_workers WHERE status IN ('active', 'draining')

-- name: held_advisory_locks --
-- Which of the named GET_LOCK locks (%(names)s: a JSON array) some session holds.
SELECT k.name FROM JSON_TABLE(%(names)s, '$[*]' COLUMNS (name VARCHAR(64) PATH '$')) k
WHERE IS_USED_LOCK(k.name) IS NOT NULL

-- name: db_uptime --
-- The server's uptime in whole seconds (run with db_now, in one round trip).
SHOW GLOBAL STATUS LIKE 'Uptime'

-- name: fail_worker --
SELECT id, TIMESTAMPDIFF(MICROSECOND, last_heartbeat_at, NOW(6)) / 1e6 AS heartbeat_age_s
FROM queue_workers WHERE id = %(id)s AND status IN ('active', 'draining') FOR UPDATE

-- name: mark_worker_failed --
UPDATE queue_workers SET status = 'failed', requested = NULL, updated_at = NOW(6)
WHERE id = %(id)s

-- name: worker_jobs --
SELECT id, token FROM jobs
WHERE worker_id = %(worker_id)s AND status IN ('assigned', 'running') ORDER BY id FOR UPDATE

-- name: recover_worker_jobs --
-- Everything a dead worker held goes back to pending. A running job's attempt counts (dead
-- when the attempts are used up; quarantined when workers died running it %(quarantine)s
-- times); a job it had not started gets its attempt back, as in a hand-back. Order matters:
-- last_error and finished_at read the old status and crash_count; crash_count and attempts
-- read the old status; status reads the new crash_count (old + 1 for a running job) and the
-- attempts (unchanged for a running job).
UPDATE jobs SET
    last_error = CASE
        WHEN status = 'running' AND crash_count + 1 >= %(quarantine)s
        THEN CONCAT('quarantined: ', crash_count + 1, ' workers died while running this job',
                    ' (the last: ', %(worker_id)s, ')')
        ELSE %(reason)s END,
    finished_at = CASE
        WHEN status = 'running' AND (crash_count + 1 >= %(quarantine)s OR attempts >= max_attempts)
        THEN NOW(6) END,
    crash_count = crash_count + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
    attempts = CASE WHEN status = 'assigned' THEN GREATEST(attempts - 1, 0) ELSE attempts END,
    status = CASE
        WHEN status = 'running' AND crash_count >= %(quarantine)s THEN 'dead'
        WHEN status = 'running' AND attempts >= max_attempts THEN 'dead'
        ELSE 'pending' END,
    worker_id = NULL, started_at = NULL
WHERE id IN %(ids)s AND status IN ('assigned', 'running')

-- name: release_worker_locks --
-- A dead worker's distributed locks, locked; recover_worker deletes them with delete_locks.
SELECT lock_key FROM distributed_locks WHERE worker_id = %(worker_id)s
ORDER BY lock_key FOR UPDATE

-- name: insert_failover_event --
INSERT INTO failover_events (event_type, failed_worker_id, target_worker_id, jobs_recovered,
                             jobs_dead, detection_ms, recovery_ms, details)
VALUES (%(event_type)s, %(worker_id)s, NULL, %(recovered)s, %(dead)s, %(detection_ms)s,
        %(recovery_ms)s, %(details)s)

-- name: get_failover_event --
SELECT * FROM failover_events WHERE id = LAST_INSERT_ID()

-- name: list_failover_events --
SELECT * FROM failover_events
WHERE (%(worker_id)s IS NULL OR failed_worker_id = %(worker_id)s)
ORDER BY failover_at DESC, id DESC LIMIT %(limit)s

-- name: recover_timed_out --
-- Jobs running past timeout + grace on a live worker (a stuck thread, a lost report).
SELECT id, token FROM jobs
WHERE status = 'running'
  AND started_at < NOW(6) - INTERVAL ROUND((timeout + %(grace)s) * 1000000) MICROSECOND
ORDER BY id FOR UPDATE

-- name: recover_timed_out_by_ids --
-- last_error reads the old worker_id; finished_at and status the unchanged attempts.
UPDATE jobs SET
    last_error = CONCAT('timed out: running for more than ', timeout, ' s + ', %(grace)s,
                        ' s grace on worker ', COALESCE(worker_id, '?')),
    finished_at = CASE WHEN attempts >= max_attempts THEN NOW(6) END,
    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' END,
    worker_id = NULL, started_at = NULL
WHERE id IN %(ids)s AND status = 'running'

-- name: close_open_assignments --
-- Like close_assignments, for rows that have no outcome yet.
UPDATE job_assignments ja
JOIN jobs j ON j.id = ja.job_id AND j.token = ja.token
SET ja.outcome = %(outcome)s, ja.finished_at = NOW(6)
WHERE j.id IN %(ids)s AND ja.outcome IS NULL

-- name: orphan_holders --
-- Workers that are stopped, failed or unknown but still hold assigned or running jobs.
SELECT DISTINCT j.worker_id FROM jobs j
LEFT JOIN queue_workers w ON w.id = j.worker_id
WHERE j.status IN ('assigned', 'running') AND j.worker_id IS NOT NULL
  AND (w.id IS NULL OR w.status IN ('stopped', 'failed'))

-- name: snapshot_ensure --
-- Runs on its own, before the transaction: an upsert locks an existing row, and two
-- replicas holding locks on it would deadlock on snapshot_lock. (The no-op update, not
-- INSERT IGNORE: that would warn of the duplicate every time.)
INSERT INTO system_snapshots (name, body, computed_at)
VALUES (%(name)s, '', '1000-01-01 00:00:00')
ON DUPLICATE KEY UPDATE name = name

-- name: snapshot_lock --
-- Waits for a replica that is computing the same snapshot, then tells whether it is fresh.
SELECT body, computed_at > NOW(6) - INTERVAL %(max_age_us)s MICROSECOND AS fresh
FROM system_snapshots WHERE name = %(name)s FOR UPDATE

-- name: snapshot_put --
-- The body as hex: aiomysql 0.3 with PyMySQL 1.2 cannot pass bytes parameters.
UPDATE system_snapshots SET body = UNHEX(%(body_hex)s), computed_at = NOW(6)
WHERE name = %(name)s

-- name: paused_flags --
-- The queues that have been paused or resumed; list_queues merges them into queue_stats.
SELECT queue_name, paused FROM queue_settings

-- name: set_queue_paused --
-- Pause (%(paused)s true) or resume a queue; paused_at comes before paused: it reads the
-- old flag, so a second pause keeps the first pause's time.
INSERT INTO queue_settings (queue_name, paused, paused_at, updated_at)
VALUES (%(queue)s, %(paused)s, CASE WHEN %(paused)s THEN NOW(6) END, NOW(6))
ON DUPLICATE KEY UPDATE
    paused_at = CASE WHEN %(paused)s THEN COALESCE(CASE WHEN paused THEN paused_at END, NOW(6))
                END,
    paused = %(paused)s, updated_at = NOW(6)

-- name: queue_setting --
SELECT queue_name, paused, paused_at FROM queue_settings WHERE queue_name = %(queue)s

-- name: retry_job --
-- A dead or cancelled job runs again, due now; when its attempts are used up it gets one
-- more. crash_count stays: a job quarantined for killing workers is quarantined again by
-- the next crash. (Locked by the caller's pick; the guard repeats the states.)
UPDATE jobs SET status = 'pending', run_at = NOW(6),
                max_attempts = GREATEST(max_attempts, attempts + 1),
                worker_id = NULL, assigned_at = NULL, started_at = NULL, finished_at = NULL
WHERE id IN %(ids)s AND status IN ('dead', 'cancelled')

-- name: retry_jobs --
-- Picks (locks) up to %(limit)s matching dead or cancelled jobs, oldest first, for retry_job
-- to change (%(ids)s: a JSON array or NULL; queue, status, task: NULL for any).
SELECT id FROM jobs
WHERE status IN ('dead', 'cancelled')
  AND (%(ids)s IS NULL
       OR id IN (SELECT f.id FROM JSON_TABLE(%(ids)s, '$[*]' COLUMNS (id BIGINT PATH '$')) f))
  AND (%(queue)s IS NULL OR queue_name = %(queue)s)
  AND (%(status)s IS NULL OR status = %(status)s)
  AND (%(task)s IS NULL OR task_name = %(task)s)
ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: cancel_jobs --
-- Picks (locks) up to %(limit)s matching pending or assigned jobs, oldest first, for
-- cancel_by_ids. SKIP LOCKED: a job a dispatch pass holds this instant is left alone (the
-- pass may be assigning it).
SELECT id, token FROM jobs
WHERE status IN ('pending', 'assigned')
  AND (%(ids)s IS NULL
       OR id IN (SELECT f.id FROM JSON_TABLE(%(ids)s, '$[*]' COLUMNS (id BIGINT PATH '$')) f))
  AND (%(queue)s IS NULL OR queue_name = %(queue)s)
  AND (%(status)s IS NULL OR status = %(status)s)
  AND (%(task)s IS NULL OR task_name = %(task)s)
ORDER BY id LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: throughput --
-- Outcomes per second between the epoch seconds %(lo)s and %(hi)s (the caller fills the
-- seconds without any), by finished_at. dead: the attempt after which the job was dead,
-- whether the worker said so or the failover watcher found it out of attempts.
SELECT t, COUNT(CASE WHEN outcome = 'succeeded' THEN 1 END) AS succeeded,
          COUNT(CASE WHEN outcome = 'failed' THEN 1 END) AS failed,
          COUNT(CASE WHEN outcome = 'dead' THEN 1 END) AS dead
FROM (
    SELECT FLOOR(UNIX_TIMESTAMP(ja.finished_at)) AS t, ja.outcome
    FROM job_assignments ja
    WHERE ja.finished_at >= FROM_UNIXTIME(%(lo)s) AND ja.finished_at < FROM_UNIXTIME(%(hi)s)
      AND ja.outcome IN ('succeeded', 'failed', 'dead')
    UNION ALL
    SELECT FLOOR(UNIX_TIMESTAMP(ja.finished_at)), 'dead'
    FROM job_assignments ja JOIN jobs j ON j.id = ja.job_id AND j.token = ja.token
    WHERE ja.finished_at >= FROM_UNIXTIME(%(lo)s) AND ja.finished_at < FROM_UNIXTIME(%(hi)s)
      AND ja.outcome IN ('lost', 'timed_out', 'interrupted') AND j.status = 'dead'
) o
GROUP BY t ORDER BY t

-- name: start_latency --
-- Enqueue-to-start of the attempts that started since the epoch second %(lo)s, in ms: the
-- rows at the ranks percentile_cont interpolates between for p50 and p99 (MySQL has no
-- percentile_cont), with n, the number of samples.
SELECT rn, n, ms FROM (
    SELECT ms, ROW_NUMBER() OVER (ORDER BY ms) AS rn, COUNT(*) OVER () AS n
    FROM (
        SELECT GREATEST(TIMESTAMPDIFF(MICROSECOND, ja.run_at, ja.started_at) / 1000e0, 0e0) AS ms
        FROM job_assignments ja
        WHERE ja.finished_at >= FROM_UNIXTIME(%(lo)s) AND ja.started_at >= FROM_UNIXTIME(%(lo)s)
          AND ja.run_at IS NOT NULL
    ) s
) r
WHERE rn IN (FLOOR(1 + 0.5 * (n - 1)), CEIL(1 + 0.5 * (n - 1)),
             FLOOR(1 + 0.99 * (n - 1)), CEIL(1 + 0.99 * (n - 1)))
ORDER BY rn

-- name: worker_assignments --
SELECT job_id, queue_name, token, assigned_at, started_at, finished_at, outcome
FROM job_assignments WHERE worker_id = %(worker_id)s
ORDER BY assigned_at DESC, id DESC LIMIT %(limit)s

-- retention --
-- Clean-ups delete in bounded batches (the caller loops until a batch comes back short), so
-- a large backlog never holds many row locks or one long transaction.

-- name: cleanup_health_checks --
-- Up to %(batch)s health checks older than %(age_us)s. Every status is named so that
-- idx_health_status_time (status, checked_at) serves it as one range scan per status.
DELETE FROM worker_health_checks
WHERE status IN ('healthy', 'degraded', 'unhealthy')
  AND checked_at < NOW(6) - INTERVAL %(age_us)s MICROSECOND
LIMIT %(batch)s

-- name: cleanup_failover_events --
-- Up to %(batch)s failover events older than %(age_us)s. No index leads with failover_at:
-- the table holds a row per dead worker (and a held-back pass a minute at most).
DELETE FROM failover_events WHERE failover_at < NOW(6) - INTERVAL %(age_us)s MICROSECOND
ORDER BY id LIMIT %(batch)s

-- name: cleanup_gone_job_assignments --
-- Up to %(batch)s assignment rows after id %(after)s whose job no longer exists, in id
-- order; deleted by delete_gone_job_assignments, which checks again.
SELECT ja.id FROM job_assignments ja
WHERE ja.id > %(after)s AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = ja.job_id)
ORDER BY ja.id LIMIT %(batch)s

-- name: delete_gone_job_assignments --
DELETE FROM job_assignments
WHERE id IN %(ids)s AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = job_assignments.job_id)

-- name: close_orphaned_assignments --
-- Up to %(batch)s open assignment rows (no outcome yet) whose job has moved on: it is not
-- assigned or running under the row's token. One statement reads both tables in one
-- snapshot, and a dispatch pass commits a job's new token with its assignment row, so a
-- live row is never seen without its job. A job never comes back to a token it left, so
-- what this finds stays orphaned; close_orphans only re-checks that no report closed it.
SELECT o.id FROM job_assignments o
WHERE o.finished_at IS NULL AND o.outcome IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM jobs j
      WHERE j.id = o.job_id AND j.token = o.token AND j.status IN ('assigned', 'running'))
ORDER BY o.id LIMIT %(batch)s

-- name: close_orphans --
UPDATE job_assignments SET finished_at = NOW(6), outcome = 'orphaned'
WHERE id IN %(ids)s AND finished_at IS NULL AND outcome IS NULL

-- name: cleanup_finished_jobs --
-- The next %(batch)s jobs after id %(after)s (the primary key: no index on the hot jobs
-- table for this), each with whether it is due to go: a finished state of %(statuses)s and
-- finished more than %(age_us)s ago; past_cutoff: it was created after the cutoff (ids grow
-- with created_at, so nothing further on can be due).
SELECT id, (status IN %(statuses)s AND finished_at < NOW(6) - INTERVAL %(age_us)s MICROSECOND)
           AS due,
       created_at >= NOW(6) - INTERVAL %(age_us)s MICROSECOND AS past_cutoff
FROM jobs WHERE id > %(after)s ORDER BY id LIMIT %(batch)s

-- name: delete_finished_jobs --
-- The due jobs of a chunk, checked again on their latest version (one retried meanwhile
-- stays).
DELETE FROM jobs
WHERE id IN %(ids)s AND status IN %(statuses)s AND status IN ('succeeded', 'dead', 'cancelled')
  AND finished_at < NOW(6) - INTERVAL %(age_us)s MICROSECOND

-- name: delete_assignments_of_gone_jobs --
-- With delete_finished_jobs, in its transaction: the assignment rows of those that went.
DELETE FROM job_assignments
WHERE job_id IN %(ids)s AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = job_assignments.job_id)

-- liveness and notifications (sessions of their own) --

-- name: notifications_since --
SELECT id FROM qstack_notifications WHERE channel = %(channel)s AND id > %(after)s ORDER BY id

-- name: notifications_last --
SELECT COALESCE(MAX(id), 0) AS id FROM qstack_notifications WHERE channel = %(channel)s

-- name: notifications_cleanup --
DELETE FROM qstack_notifications WHERE created_at < NOW(6) - INTERVAL %(age_us)s MICROSECOND
ORDER BY created_at LIMIT %(batch)s

-- name: liveness_take --
SELECT GET_LOCK(%(name)s, 0) AS got

-- name: liveness_give --
SELECT RELEASE_LOCK(%(name)s) AS released

-- backup and restore --

-- name: backup_now --
SELECT NOW(6) AS now

-- name: backup_columns --
-- The columns of the tables %(tables)s in this database, in order: type, whether it is an
-- identity column (AUTO_INCREMENT), its place in the primary key. Generated columns (the
-- invisible lock_key_active) are left out: they are computed, not stored data.
SELECT c.TABLE_NAME AS table_name, c.COLUMN_NAME AS column_name, c.DATA_TYPE AS data_type,
       c.COLUMN_TYPE AS column_type, c.EXTRA LIKE '%%auto_increment%%' AS is_identity,
       k.ORDINAL_POSITION AS pk_position
FROM information_schema.COLUMNS c
LEFT JOIN information_schema.KEY_COLUMN_USAGE k
  ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME
 AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY'
WHERE c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME IN %(tables)s
  AND COALESCE(c.GENERATION_EXPRESSION, '') = ''
ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION

-- name: backup_schema --
SELECT version, name FROM schema_migrations ORDER BY version

-- name: backup_sequences --
-- The last value each AUTO_INCREMENT column of the tables %(tables)s handed out (the
-- counter is the next one; a table that never had a row has none), named "table.column".
SELECT CONCAT(t.TABLE_NAME, '.', c.COLUMN_NAME) AS name, t.AUTO_INCREMENT - 1 AS value
FROM information_schema.TABLES t
JOIN information_schema.COLUMNS c
  ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
 AND c.EXTRA LIKE '%%auto_increment%%'
WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME IN %(tables)s AND t.AUTO_INCREMENT > 1
ORDER BY name

-- name: fencing_sequence --
-- The fencing tokens' counter (the last token handed out; 0: none yet).
SELECT value FROM qstack_sequences WHERE name = 'qstack_fencing_seq'

-- name: restore_fencing_floor --
-- The largest fencing token restored: the counter goes at least this far.
SELECT GREATEST(COALESCE((SELECT MAX(token) FROM jobs), 0),
                COALESCE((SELECT MAX(token) FROM job_assignments), 0),
                COALESCE((SELECT MAX(token) FROM distributed_locks), 0)) AS floor

-- name: restore_sequence --
-- Move the fencing counter (the one sequence kept in a table) up to %(value)s, never down.
UPDATE qstack_sequences SET value = GREATEST(value, %(value)s) WHERE name = 'qstack_fencing_seq'

-- name: restore_lock --
-- One restore at a time per database: a second waits, then finds the rows the first loaded.
SELECT GET_LOCK(CONCAT('qstack_restore:', DATABASE()), 30) AS got

-- name: restore_unlock --
SELECT RELEASE_LOCK(CONCAT('qstack_restore:', DATABASE())) AS released

-- name: migrate_lock --
-- One migrator at a time per database (DDL is not transactional here: a lock, not a
-- transaction, keeps two from applying the same file).
SELECT GET_LOCK(CONCAT('qstack_migrate:', DATABASE()), 60) AS got

-- name: migrations_table --
-- Whether schema_migrations exists yet (CREATE TABLE IF NOT EXISTS would warn when it does).
SELECT COUNT(*) AS n FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'schema_migrations'

-- name: create_migrations_table --
CREATE TABLE schema_migrations (
    version    INTEGER      NOT NULL PRIMARY KEY,
    name       VARCHAR(255) NOT NULL,
    applied_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin

-- name: applied_migrations --
SELECT version, applied_at FROM schema_migrations

-- name: record_migration --
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: migrate_unlock --
SELECT RELEASE_LOCK(CONCAT('qstack_migrate:', DATABASE())) AS released

-- performance stats --

-- name: perf_server --
SELECT VERSION() AS version, DATABASE() AS `database`,
       (SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES
         WHERE TABLE_SCHEMA = DATABASE()) AS database_bytes,
       (SELECT COUNT(*) FROM information_schema.PROCESSLIST) AS connections,
       (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE())
           AS database_connections,
       @@max_connections AS max_connections

-- name: perf_tables --
-- The tables %(tables)s of this database, largest first. estimated_rows is InnoDB's
-- estimate (information_schema.TABLES.TABLE_ROWS).
SELECT TABLE_NAME AS `table`, TABLE_ROWS AS estimated_rows,
       DATA_LENGTH + INDEX_LENGTH AS total_bytes, DATA_LENGTH AS table_bytes,
       INDEX_LENGTH AS index_bytes
FROM information_schema.TABLES
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN %(tables)s
ORDER BY DATA_LENGTH + INDEX_LENGTH DESC, TABLE_NAME

-- name: perf_indexes --
-- The indexes of the tables %(tables)s.
SELECT DISTINCT TABLE_NAME AS `table`, INDEX_NAME AS `index`
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN %(tables)s
ORDER BY TABLE_NAME, INDEX_NAME

-- name: perf_index_sizes --
-- Their sizes, from InnoDB's persistent statistics (in pages; needs SELECT on mysql.*).
SELECT table_name AS `table`, index_name AS `index`, stat_value * @@innodb_page_size AS size_bytes
FROM mysql.innodb_index_stats
WHERE database_name = DATABASE() AND table_name IN %(tables)s AND stat_name = 'size'

-- name: perf_table_analyzed --
-- When InnoDB last computed each table's statistics (ANALYZE TABLE, or its automatic
-- recalculation): PostgreSQL's last (auto)analyze. Needs SELECT on mysql.*.
SELECT table_name AS `table`, last_update AS analyzed_at FROM mysql.innodb_table_stats
WHERE database_name = DATABASE() AND table_name IN %(tables)s

-- name: perf_index_usage --
-- Index reads per index from performance_schema (when it is enabled).
SELECT OBJECT_NAME AS `table`, INDEX_NAME AS `index`, COUNT_READ AS scans,
       COUNT_FETCH AS tuples_read
FROM performance_schema.table_io_waits_summary_by_index_usage
WHERE OBJECT_SCHEMA = DATABASE() AND OBJECT_NAME IN %(tables)s AND INDEX_NAME IS NOT NULL

-- name: perf_table_usage --
-- Per table: reads without an index (seq_scan) and with one (idx_scan), performance_schema.
SELECT OBJECT_NAME AS `table`,
       SUM(CASE WHEN INDEX_NAME IS NULL THEN COUNT_READ ELSE 0 END) AS seq_scan,
       SUM(CASE WHEN INDEX_NAME IS NOT NULL THEN COUNT_READ ELSE 0 END) AS idx_scan
FROM performance_schema.table_io_waits_summary_by_index_usage
WHERE OBJECT_SCHEMA = DATABASE() AND OBJECT_NAME IN %(tables)s
GROUP BY OBJECT_NAME

-- name: perf_status --
-- Server-wide counters (SHOW GLOBAL STATUS reads the same on MySQL 8 and MariaDB).
SHOW GLOBAL STATUS WHERE Variable_name IN (
    'Uptime', 'Com_commit', 'Com_rollback', 'Handler_commit', 'Handler_rollback',
    'Innodb_deadlocks', 'Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads',
    'Created_tmp_disk_tables', 'Created_tmp_files', 'Threads_connected')

-- name: perf_statements --
-- The %(limit)s slowest statement digests of this database by mean time (picoseconds in
-- performance_schema).
SELECT DIGEST AS queryid, DIGEST_TEXT AS query, COUNT_STAR AS calls,
       SUM_TIMER_WAIT / 1e9 AS total_ms, AVG_TIMER_WAIT / 1e9 AS mean_ms,
       MAX_TIMER_WAIT / 1e9 AS max_ms, SUM_ROWS_SENT AS `rows`
FROM performance_schema.events_statements_summary_by_digest
WHERE SCHEMA_NAME = DATABASE()
ORDER BY AVG_TIMER_WAIT DESC LIMIT %(limit)s

-- name: perf_schema_enabled --
SELECT @@performance_schema AS enabled

-- name: perf_ping --
SELECT 1
