"""The MySQL 8 / MariaDB 10.6+ backend (aiomysql): the storage contract in MySQL's dialect.

Where PostgreSQL returns changed rows (UPDATE ... RETURNING), this backend locks the rows
first (SELECT ... FOR UPDATE) and changes them by primary key in the same transaction, or
sends a script of guarded one-row statements whose affected-row counts say which applied.
Every transaction is one or a few round trips: its statements go as one multi-statement
script where they do not depend on each other's results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import aiomysql

from qshared.errors import StorageError
from qshared.storage import DISPATCH_CHANNEL, mysql_backup, mysql_stats, worker_channel
from qshared.storage.base import (
    RETENTION_BATCH,
    WORKER_STATES,
    Assignment,
    Callback,
    Chooser,
    Enqueued,
    JobFilter,
    NewJob,
    Outcome,
    PendingJob,
    Storage,
    Subscription,
    WorkerSlots,
    finished_statuses,
    retention_seconds,
)
from qshared.storage.mysql_scripts import (
    TRANSIENT,
    Part,
    Result,
    Tx,
    epoch,
    micros,
    retried,
    script,
    to_json,
    translated,
)
from qshared.storage.mysql_sessions import (
    MysqlLiveness,
    MysqlParams,
    MysqlSubscription,
    connect,
    liveness_lock_name,
)
from qshared.storage.queries import load_queries
from qshared.storage.sql_shared import latest_outcomes, migration_files, split_statements

log = logging.getLogger(__name__)

LOCKS_CHANNEL = "qstack_locks"  # the lock waiters' wake-up channel (as pg_notify names it)
# Tables of this dialect that are not part of the data model: the fencing counter (a
# sequence in PostgreSQL) and the notifications (LISTEN/NOTIFY there). Not backed up.
INTERNAL_TABLES = ("qstack_sequences", "qstack_notifications")
# A batch of one-row statements goes in scripts of at most this many statements and about
# this many bytes of values (under max_allowed_packet: 16 MiB on MariaDB, 64 MiB on MySQL 8).
SCRIPT_ROWS = 500
SCRIPT_BYTES = 4 << 20


def _chunks(parts: Sequence[Part]) -> list[list[Part]]:
    """The parts of a batch in scripts of at most SCRIPT_ROWS statements and roughly
    SCRIPT_BYTES of text values."""
    out: list[list[Part]] = [[]]
    size = 0
    for part in parts:
        args = part[1] or {}
        weight = 200 + sum(len(v) for v in args.values() if isinstance(v, str))
        if out[-1] and (len(out[-1]) >= SCRIPT_ROWS or size + weight > SCRIPT_BYTES):
            out.append([])
            size = 0
        out[-1].append(part)
        size += weight
    return [chunk for chunk in out if chunk]


class MysqlStorage(Storage):
    """Storage on MySQL 8 or MariaDB 10.6+."""

    dialect = "mysql"
    push_wakeups = True  # subscriptions only poll: the dispatcher pushes over HTTP

    def __init__(self, pool: aiomysql.Pool, params: MysqlParams, max_size: int) -> None:
        self._pool, self._params, self._max = pool, params, max_size
        self._q = load_queries("mysql")
        self._closed = False
        self._db_started: datetime | None = None
        # this process's subscriptions per channel: a commit that notifies a channel calls
        # them back at once (the poll would take up to POLL_S); other processes poll
        self._local: dict[str, set[MysqlSubscription]] = {}

    @classmethod
    @translated
    async def open(
        cls, dsn: str, *, pool_size: int = 20, max_idle: float = 3600, min_size: int = 1,
        durable: bool = True,
    ) -> MysqlStorage:
        # durable is PostgreSQL's synchronous_commit=off; MySQL's counterpart
        # (innodb_flush_log_at_trx_commit) is server-wide, so it is left to the operator.
        params = MysqlParams.from_url(dsn)
        async with asyncio.timeout(15):
            probe = await aiomysql.connect(**{**params.connect_kwargs(), "init_command": None})
        try:
            async with probe.cursor() as cur:
                await cur.execute("SELECT VERSION()")
                [(version,)] = await cur.fetchall()
        finally:
            probe.close()
        params.mariadb = "mariadb" in version.lower()
        pool = await aiomysql.create_pool(
            minsize=min(min_size, pool_size), maxsize=pool_size, pool_recycle=int(max_idle),
            **params.connect_kwargs(),
        )
        return cls(pool, params, pool_size)

    async def close(self) -> None:
        self._closed = True
        self._pool.close()
        try:
            async with asyncio.timeout(10):
                await self._pool.wait_closed()
        except Exception:
            self._pool.terminate()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection; closed instead of returned when something went wrong on it
        (a cancelled query leaves the protocol mid-way)."""
        if self._closed:
            raise StorageError("mysql: the storage is closed")
        try:
            conn = await self._pool.acquire()
        except RuntimeError as exc:  # the pool is closing
            raise StorageError(f"mysql: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        finally:
            self._pool.release(conn)

    @contextlib.asynccontextmanager
    async def _tx(self, conn: aiomysql.Connection | None = None) -> AsyncIterator[Tx]:
        """A transaction: committed at the end unless a run() committed it already; rolled
        back (the connection dropped) on an error."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self._conn())
            tx = Tx(conn, [("START TRANSACTION", None)])
            yield tx
            if tx.open:
                await conn.commit()
        for channel in tx.channels:  # committed: wake this process's listeners now
            for sub in tuple(self._local.get(channel, ())):
                sub.wake()

    async def _fetch(self, sql: str, **args: Any) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            [result] = await script(conn, [(sql, args)])
        return result.rows

    async def _fetchrow(self, sql: str, **args: Any) -> dict[str, Any] | None:
        rows = await self._fetch(sql, **args)
        return rows[0] if rows else None

    async def _execute(self, sql: str, **args: Any) -> int:
        async with self._conn() as conn:
            [result] = await script(conn, [(sql, args)])
        return result.rowcount

    def _notify(self, channel: str) -> Part:
        return self._q["notify"], {"channel": channel}

    @translated
    async def ping(self) -> None:
        async with self._conn() as conn, asyncio.timeout(5):
            await script(conn, [("SELECT 1", None)])

    def pool_stats(self) -> tuple[int, int]:
        return self._pool.size - self._pool.freesize, self._max

    # -- migrations --------------------------------------------------------------------
    @translated
    async def migrate(self) -> list[str]:
        applied_now: list[str] = []
        async with self._conn() as conn:
            [lock] = await script(conn, [(self._q["migrate_lock"], {})])
            if lock.rows[0]["got"] != 1:
                raise StorageError("mysql: another migration has held the migration lock "
                                   "for 60 s")
            try:
                [exists] = await script(conn, [(self._q["migrations_table"], {})])
                if not exists.rows[0]["n"]:
                    await script(conn, [(self._q["create_migrations_table"], {})])
                [done] = await script(conn, [(self._q["applied_migrations"], {})])
                versions = {r["version"] for r in done.rows}
                for version, name, sql in migration_files(self.dialect):
                    if version in versions:
                        continue
                    # DDL commits as it goes: a file that fails half-way is left half-applied
                    # (and unrecorded), to be finished by hand; qstack's own files are tested.
                    for statement in split_statements(sql):
                        await script(conn, [(statement, None)])
                    await script(conn, [(self._q["record_migration"],
                                         {"version": version, "name": name})])
                    applied_now.append(name)
            finally:  # (a connection that broke has freed the lock with its session)
                with contextlib.suppress(*TRANSIENT):
                    await script(conn, [(self._q["migrate_unlock"], {})])
        return applied_now

    @translated
    async def migration_status(self) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            [exists] = await script(conn, [(self._q["migrations_table"], {})])
            rows: dict[int, datetime] = {}
            if exists.rows[0]["n"]:
                [applied] = await script(conn, [(self._q["applied_migrations"], {})])
                rows = {r["version"]: r["applied_at"] for r in applied.rows}
        return [
            {"version": v, "name": n, "applied_at": rows.get(v)}
            for v, n, _ in migration_files(self.dialect)
        ]

    # -- jobs --------------------------------------------------------------------------
    @translated
    @retried
    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        if not jobs:
            return []
        parts = [(self._q["enqueue"], {
            "queue_name": j.queue_name, "task_name": j.task_name, "payload": j.payload_json,
            "priority": j.priority, "max_attempts": j.max_attempts, "timeout": j.timeout,
            "delay_us": micros(j.delay_s), "unique_key": j.unique_key, "lock_key": j.lock_key,
        }) for j in jobs]
        results: list[Result] = []
        async with self._tx() as tx:
            for chunk in _chunks(parts):
                results += await tx.run(*chunk)
            created = any(r.rowcount == 1 for r in results)
            await tx.run(*([self._notify(DISPATCH_CHANNEL)] if created else []), commit=True)
        # a new row: 1 affected row and its id; a known unique_key: 0 rows and the first id
        return [Enqueued(int(r.lastrowid or 0), r.rowcount == 1) for r in results]

    @translated
    async def get_job(self, job_id: int) -> dict[str, Any] | None:
        return await self._fetchrow(self._q["get_job"], id=job_id)

    @translated
    async def job_assignments(self, job_id: int) -> list[dict[str, Any]]:
        return await self._fetch(self._q["job_assignments"], id=job_id)

    async def _cancel(self, pick: str, args: Mapping[str, Any]) -> list[int]:
        """Cancel the jobs the query `pick` locks, then close their assignment rows."""
        async with self._tx() as tx:
            [picked] = await tx.run((pick, args))
            ids = sorted(r["id"] for r in picked.rows)
            if ids:
                await tx.run((self._q["cancel_by_ids"], {"ids": ids}),
                             (self._q["close_cancelled_assignments"], {"ids": ids}), commit=True)
        return ids

    @translated
    @retried
    async def cancel_job(self, job_id: int) -> bool:
        return bool(await self._cancel(self._q["cancel_job"], {"id": job_id}))

    @translated
    @retried
    async def retry_job(self, job_id: int) -> dict[str, Any] | None:
        # the status always changes when the guard lets it through: affected rows tell
        async with self._conn() as conn:
            _, retried, _, got, _ = await script(conn, [
                ("START TRANSACTION", None), (self._q["retry_job"], {"ids": [job_id]}),
                (self._q["notify_if_changed"], {"channel": DISPATCH_CHANNEL}),
                (self._q["get_job"], {"id": job_id}), ("COMMIT", None)])
        return got.rows[0] if retried.rowcount == 1 and got.rows else None

    def _filter_args(self, match: JobFilter, limit: int) -> dict[str, Any]:
        ids = to_json(list(match.ids)) if match.ids is not None else None
        return {"ids": ids, "queue": match.queue, "status": match.status, "task": match.task,
                "limit": limit}

    @translated
    @retried
    async def retry_jobs(self, match: JobFilter, limit: int) -> list[int]:
        async with self._tx() as tx:
            [picked] = await tx.run((self._q["retry_jobs"], self._filter_args(match, limit)))
            ids = sorted(r["id"] for r in picked.rows)
            if ids:
                await tx.run((self._q["retry_job"], {"ids": ids}),
                             self._notify(DISPATCH_CHANNEL), commit=True)
        return ids

    @translated
    @retried
    async def cancel_jobs(self, match: JobFilter, limit: int) -> list[int]:
        return await self._cancel(self._q["cancel_jobs"], self._filter_args(match, limit))

    @translated
    async def list_jobs(
        self, *, queue: str | None, status: str | None, task: str | None,
        before_id: int | None, limit: int,
    ) -> list[dict[str, Any]]:
        return await self._fetch(self._q["list_jobs"], queue=queue, status=status, task=task,
                                 before_id=before_id, limit=limit)

    @translated
    async def queue_stats(self) -> list[dict[str, Any]]:
        return await self._fetch(self._q["queue_stats"])

    @translated
    async def list_queues(self) -> list[dict[str, Any]]:
        async with self._conn() as conn:  # one snapshot for both reads
            stats_r, paused_r = (await script(conn, [
                ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", None),
                ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", None),
                (self._q["queue_stats"], {}), (self._q["paused_flags"], {}),
                ("COMMIT", None)]))[2:4]
        stats = {r["queue_name"]: r for r in stats_r.rows}
        paused = {r["queue_name"]: r["paused"] for r in paused_r.rows}
        empty = {k: 0 for k in ("pending", "scheduled", "assigned", "running", "succeeded",
                                "failed", "dead", "cancelled")} | {"oldest_pending_age_s": 0.0}
        return [
            {"queue_name": name, **{k: v for k, v in stats.get(name, empty).items()
                                    if k != "queue_name"},
             "paused": paused.get(name, False)}
            for name in sorted(stats.keys() | paused.keys())
        ]

    @translated
    @retried
    async def set_queue_paused(self, queue: str, paused: bool) -> dict[str, Any]:
        args = {"queue": queue, "paused": paused}
        wake = [] if paused else [self._notify(DISPATCH_CHANNEL)]
        async with self._tx() as tx:
            row = (await tx.run((self._q["set_queue_paused"], args),
                                (self._q["queue_setting"], args), *wake, commit=True))[1]
        return row.rows[0]

    @translated
    async def throughput(self, seconds: int) -> dict[str, Any]:
        async with self._conn() as conn:
            [now] = await script(conn, [(self._q["db_now"], {})])
            hi = int(now.rows[0]["now"].timestamp()) + 1  # the current second included
            lo = hi - seconds
            counts, ranks = await script(conn, [
                (self._q["throughput"], {"lo": lo, "hi": hi}),
                (self._q["start_latency"], {"lo": lo})])
        per_second = {int(r["t"]): r for r in counts.rows}
        buckets = []
        for t in range(lo, hi):
            r = per_second.get(t, {})
            buckets.append({"t": float(t), "succeeded": r.get("succeeded", 0),
                            "failed": r.get("failed", 0), "dead": r.get("dead", 0)})
        return {"buckets": buckets, "latency": _percentiles(ranks.rows)}

    @translated
    async def cached_snapshot(
        self, name: str, max_age: float, compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        async with self._conn() as conn:
            await script(conn, [(self._q["snapshot_ensure"], {"name": name})])
            async with self._tx(conn) as tx:
                [row] = await tx.run((self._q["snapshot_lock"],
                                      {"name": name, "max_age_us": micros(max_age)}))
                if row.rows[0]["fresh"]:
                    return bytes(row.rows[0]["body"])
                body = await compute()
                await tx.run((self._q["snapshot_put"], {"name": name, "body_hex": body.hex()}),
                             commit=True)
                return body

    # -- dispatch ----------------------------------------------------------------------
    @translated
    async def worker_slots(self, heartbeat_ttl: float) -> list[WorkerSlots]:
        rows = await self._fetch(self._q["worker_capacity"], ttl_us=micros(heartbeat_ttl))
        return [
            WorkerSlots(
                r["id"], tuple(q for q in r["queues"].split(",") if q),
                r["concurrency"] + r["prefetch"], r["in_flight"], r["admin_url"],
                r["concurrency"],
            )
            for r in rows
        ]

    @translated
    @retried
    async def dispatch(
        self, worker_ids: Sequence[str], queue_limits: dict[str, int], choose: Chooser
    ) -> list[tuple[int, str]]:
        names = [n for n, limit in queue_limits.items() if limit > 0]
        if not worker_ids or not names:
            return []
        async with self._tx() as tx:
            # the workers' share locks and each queue's due jobs, in one round trip; then
            # those jobs locked (see pick_due for why that is a second statement)
            workers, *dues = await tx.run(
                (self._q["lock_workers"], {"ids": list(worker_ids)}),
                *((self._q["pick_due"], {"queue": n, "limit": queue_limits[n]})
                  for n in names))
            locked = {r["id"] for r in workers.rows}
            due = [r["id"] for d in dues for r in d.rows]
            if not locked or not due:
                return []
            [picked] = await tx.run((self._q["pick_pending"], {"ids": due}))
            pending = [
                PendingJob(r["id"], r["queue_name"], r["priority"], r["run_at"], r["lock_key"])
                for r in picked.rows
            ]
            if not pending:
                return []
            offered = {j.id: j for j in pending}
            pairs, keys = [], set()
            for job_id, worker_id in choose(pending):
                job = offered.get(job_id)
                if job is None or worker_id not in locked:
                    continue
                if job.lock_key is not None:  # one active job per lock_key, whatever chose
                    if job.lock_key in keys:
                        continue
                    keys.add(job.lock_key)
                pairs.append((job_id, worker_id))
            if not pairs:
                return []
            # the tokens: next_tokens makes LAST_INSERT_ID() the last of len(pairs) new ones
            # (nothing in between inserts into a table with an AUTO_INCREMENT column)
            n = len(pairs)
            results = await tx.run(
                (self._q["next_tokens"], {"n": n}),
                *((self._q["assign"], {"id": job_id, "worker_id": worker_id, "back": n - 1 - i})
                  for i, (job_id, worker_id) in enumerate(pairs)),
                (self._q["insert_assignments"], {"ids": [p[0] for p in pairs]}),
                *(self._notify(worker_channel(w)) for w in sorted({p[1] for p in pairs})),
                commit=True)
            moved = results[1:1 + n]
            return [p for p, r in zip(pairs, moved, strict=True) if r.rowcount == 1]

    @translated
    async def next_due_in(self) -> float | None:
        row = await self._fetchrow(self._q["next_due_in"])
        return row["due_in"] if row else None

    # -- worker side -------------------------------------------------------------------
    @translated
    async def claim_assigned(self, worker_id: str, held: Sequence[int]) -> list[Assignment]:
        rows = await self._fetch(self._q["claim_assigned"], worker_id=worker_id,
                                 held=to_json(list(held)))
        return [
            Assignment(
                r["id"], r["token"], r["queue_name"], r["task_name"], r["payload"],
                r["priority"], r["attempts"], r["max_attempts"], r["timeout"],
                r["created_at"], r["run_at"],
            )
            for r in rows
        ]

    @translated
    @retried
    async def mark_running(self, starts: Sequence[tuple[int, int, float]]) -> set[int]:
        if not starts:
            return set()
        ordered = sorted(starts)  # rows are locked in id order: no deadlock between batches
        parts = [(self._q["mark_running"], {"id": i, "token": t, "started": epoch(s)})
                 for i, t, s in ordered]
        async with self._tx() as tx:
            results = []
            for chunk in _chunks(parts):
                results += await tx.run(*chunk)
        return {s[0] for s, r in zip(ordered, results, strict=True) if r.rowcount == 1}

    @translated
    @retried
    async def report(self, outcomes: Sequence[Outcome]) -> list[tuple[int, str]]:
        outcomes = sorted(latest_outcomes(outcomes), key=lambda o: (o.id, o.token))
        if not outcomes:
            return []
        args = [{"id": o.id, "token": o.token, "status": o.status,
                 "started": epoch(o.started), "finished": epoch(o.finished),
                 "result": o.result_json, "error": o.error, "retry_us": micros(o.retry_in)}
                for o in outcomes]
        async with self._tx() as tx:
            results = []
            for chunk in _chunks([(self._q["report"], a) for a in args]):
                results += await tx.run(*chunk)
            applied = [a for a, r in zip(args, results, strict=True) if r.rowcount == 1]
            finished = any(a["status"] != "running" for a in applied)
            # the assignment rows need neither result nor error: smaller scripts
            closing = _chunks([(self._q["report_assignment"], {**a, "result": None, "error": None})
                               for a in applied]) or [[]]
            for chunk in closing[:-1]:
                await tx.run(*chunk)
            await tx.run(*closing[-1], *([self._notify(DISPATCH_CHANNEL)] if finished else []),
                         commit=True)
        return [(a["id"], a["status"]) for a in applied]

    async def _give_back(self, pick: str, update: str, outcome: str,
                         args: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Lock the jobs the query `pick` names, change them with the query `update`, close
        their assignment rows with `outcome`, wake the dispatcher. Returns: their new states."""
        async with self._tx() as tx:
            [picked] = await tx.run((pick, args))
            ids = [r["id"] for r in picked.rows]
            if not ids:
                return []
            _, _, states, _ = await tx.run(
                (update, {**args, "ids": ids}),
                (self._q["close_assignments"], {"ids": ids, "outcome": outcome}),
                (self._q["job_states"], {"ids": ids}), self._notify(DISPATCH_CHANNEL),
                commit=True)
        return states.rows

    @translated
    @retried
    async def hand_back(self, worker_id: str) -> list[int]:
        rows = await self._give_back(self._q["hand_back"], self._q["hand_back_by_ids"], "returned",
                                     {"worker_id": worker_id})
        return [r["id"] for r in rows]

    @translated
    @retried
    async def release_running(self, worker_id: str, reason: str) -> list[tuple[int, str]]:
        rows = await self._give_back(self._q["release_running"], self._q["release_running_by_ids"],
                                     "interrupted",
                                     {"worker_id": worker_id, "reason": reason})
        return [(r["id"], r["status"]) for r in rows]

    @translated
    async def subscribe(self, channel: str, callback: Callback) -> Subscription:
        local = self._local.setdefault(channel, set())
        sub = MysqlSubscription(self._params, self._q, channel, callback,
                                on_close=local.discard)
        await sub.start()
        local.add(sub)
        return sub

    # -- registry ----------------------------------------------------------------------
    @translated
    @retried
    async def register_worker(self, worker: dict[str, Any]) -> dict[str, Any]:
        args = {
            "id": worker["id"], "hostname": worker["hostname"], "pid": worker["pid"],
            "queues": ",".join(worker["queues"]), "concurrency": worker["concurrency"],
            "prefetch": worker.get("prefetch", 0), "version": worker.get("version", ""),
            "admin_url": worker.get("admin_url"), "config": to_json(worker.get("config") or {}),
        }
        async with self._tx() as tx:
            _, row = await tx.run((self._q["register_worker"], args),
                                  (self._q["get_worker"], {"id": worker["id"]}), commit=True)
        return row.rows[0]

    @translated
    @retried
    async def heartbeat(
        self, worker_id: str, health: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        check: list[Part] = []
        if health is not None:
            check = [(self._q["insert_health_check"], {
                "id": worker_id, "status": health["status"],
                "cpu_percent": health.get("cpu_percent"),
                "memory_bytes": health.get("memory_bytes"), "in_flight": health.get("in_flight"),
                "loop_lag_ms": health.get("loop_lag_ms"),
                "details": to_json(health.get("details") or {}),
            })]
        async with self._tx() as tx:
            *_, reply = await tx.run((self._q["heartbeat"], {"id": worker_id}), *check,
                                     (self._q["heartbeat_reply"], {"id": worker_id}), commit=True)
        return reply.rows[0] if reply.rows else None

    async def _change_worker(self, worker_id: str, from_states: Sequence[str],
                             update: Part) -> dict[str, Any] | None:
        """Lock the worker if it is in one of `from_states`, apply `update`, read it back."""
        if not from_states:
            return None
        async with self._tx() as tx:
            locked, _, row = await tx.run(
                (self._q["lock_worker"], {"id": worker_id, "from_states": list(from_states)}),
                update, (self._q["get_worker"], {"id": worker_id}), commit=True)
        return row.rows[0] if locked.rows else None

    @translated
    @retried
    async def set_worker_status(
        self, worker_id: str, status: str, requested: str | None = None,
        from_states: Sequence[str] = WORKER_STATES,
    ) -> dict[str, Any] | None:
        return await self._change_worker(worker_id, from_states, (self._q["set_worker_status"], {
            "id": worker_id, "status": status, "requested": requested,
            "from_states": list(from_states) or [""]}))

    @translated
    @retried
    async def request_worker(self, worker_id: str, request: str) -> dict[str, Any] | None:
        return await self._change_worker(worker_id, ("active", "draining"), (
            self._q["request_worker"], {"id": worker_id, "request": request}))

    @translated
    async def get_worker(self, worker_id: str) -> dict[str, Any] | None:
        return await self._fetchrow(self._q["get_worker"], id=worker_id)

    @translated
    async def list_workers(self, status: str | None = None) -> list[dict[str, Any]]:
        return await self._fetch(self._q["list_workers"], status=status)

    @translated
    async def worker_stats(self) -> list[dict[str, Any]]:
        return await self._fetch(self._q["worker_stats"])

    @translated
    async def recent_health_checks(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(self._q["recent_health_checks"], id=worker_id, limit=limit)

    @translated
    async def resource_stats(self, seconds: float) -> list[dict[str, Any]]:
        return await self._fetch(self._q["resource_stats"], window_us=micros(seconds))

    @translated
    async def worker_assignments(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._fetch(self._q["worker_assignments"], worker_id=worker_id, limit=limit)

    # -- locks -------------------------------------------------------------------------
    @translated
    @retried
    async def acquire_lock(
        self, key: str, owner: str, ttl: float, worker_id: str | None = None
    ) -> tuple[int, datetime] | None:
        args = {"key": key, "owner": owner, "worker_id": worker_id, "ttl_us": micros(ttl)}
        async with self._conn() as conn:  # each statement commits on its own
            *_, got = await script(conn, [(self._q["next_tokens"], {"n": 1}),
                                          (self._q["acquire_lock"], args),
                                          (self._q["acquired_lock"], args)])
        row = got.rows[0] if got.rows else None
        return (row["token"], row["expires_at"]) if row else None

    @translated
    @retried
    async def renew_lock(
        self, key: str, owner: str, token: int, ttl: float
    ) -> tuple[int, datetime] | None:
        args = {"key": key, "owner": owner, "token": token, "ttl_us": micros(ttl)}
        async with self._conn() as conn:
            _, got = await script(conn, [(self._q["renew_lock"], args),
                                         (self._q["renewed_lock"], args)])
        row = got.rows[0] if got.rows else None
        return (row["token"], row["expires_at"]) if row else None

    @translated
    async def release_lock(self, key: str, owner: str, token: int) -> bool:
        async with self._conn() as conn:
            deleted, _ = await script(conn, [
                (self._q["release_lock"], {"key": key, "owner": owner, "token": token}),
                (self._q["notify_if_changed"], {"channel": LOCKS_CHANNEL})])
        return deleted.rowcount == 1

    @translated
    async def get_lock(self, key: str) -> dict[str, Any] | None:
        return await self._fetchrow(self._q["get_lock"], key=key)

    @translated
    async def list_locks(self) -> list[dict[str, Any]]:
        return await self._fetch(self._q["list_locks"])

    @translated
    @retried
    async def clear_stale_locks(self, grace: float) -> list[str]:
        async with self._tx() as tx:
            [stale] = await tx.run((self._q["clear_stale_locks"], {"grace_us": micros(grace)}))
            keys = [r["lock_key"] for r in stale.rows]
            if keys:
                await tx.run((self._q["delete_locks"], {"keys": keys}),
                             self._notify(LOCKS_CHANNEL), commit=True)
        return keys

    @translated
    async def db_now(self) -> datetime:
        return (await self._fetch(self._q["db_now"]))[0]["now"]

    # -- liveness and failover ---------------------------------------------------------
    @translated
    async def hold_liveness(self, worker_id: str) -> Subscription:
        holder = MysqlLiveness(self._params, self._q,
                               liveness_lock_name(self._params.database, worker_id))
        await holder.start()
        return holder

    @translated
    async def liveness(self) -> list[dict[str, Any]]:
        rows = await self._fetch(self._q["liveness_candidates"])
        names = {liveness_lock_name(self._params.database, r["id"]): r for r in rows}
        held: set[str] = set()
        if names:
            held = {r["name"] for r in await self._fetch(
                self._q["held_advisory_locks"], names=to_json(list(names)))}
        for name, row in names.items():
            row["session_alive"] = name in held
        return rows

    @translated
    async def db_uptime(self) -> tuple[datetime, float]:
        async with self._conn() as conn:
            now_r, status = await script(conn, [(self._q["db_now"], {}),
                                                (self._q["db_uptime"], {})])
        now = now_r.rows[0]["now"]
        started = now - timedelta(seconds=int(status.rows[0]["Value"]))
        # MySQL counts its uptime in whole seconds, so the start computed from it wavers by
        # a second: keep the one seen before unless it moved further (a restart).
        if self._db_started is not None and abs(started - self._db_started) <= timedelta(seconds=2):
            started = self._db_started
        self._db_started = started
        return started, (now - started).total_seconds()

    @translated
    @retried
    async def recover_worker(
        self, worker_id: str, *, reason: str, event_type: str, quarantine_after: int,
        details: dict[str, Any], mark_failed: bool = True,
    ) -> dict[str, Any] | None:
        started = time.perf_counter()
        who = {"worker_id": worker_id, "id": worker_id}
        async with self._tx() as tx:
            heartbeat_age = None
            if mark_failed:
                [failed] = await tx.run((self._q["fail_worker"], who))
                if not failed.rows:
                    return None
                heartbeat_age = failed.rows[0]["heartbeat_age_s"]
                _, held, locked = await tx.run((self._q["mark_worker_failed"], who),
                                               (self._q["worker_jobs"], who),
                                               (self._q["release_worker_locks"], who))
            else:
                held, locked = await tx.run((self._q["worker_jobs"], who),
                                            (self._q["release_worker_locks"], who))
            ids = [r["id"] for r in held.rows]
            locks = [r["lock_key"] for r in locked.rows]
            parts: list[Part] = []
            if ids:
                parts += [(self._q["recover_worker_jobs"], {
                              **who, "ids": ids, "reason": reason,
                              "quarantine": quarantine_after}),
                          (self._q["close_open_assignments"], {"ids": ids, "outcome": "lost"}),
                          (self._q["job_states"], {"ids": ids}), self._notify(DISPATCH_CHANNEL)]
            if locks:
                parts += [(self._q["delete_locks"], {"keys": locks}), self._notify(LOCKS_CHANNEL)]
            results = await tx.run(*parts) if parts else []
            jobs = results[2].rows if ids else []
            quarantined = [r["id"] for r in jobs
                           if r["status"] == "dead" and r["crash_count"] >= quarantine_after]
            dead = sum(1 for r in jobs if r["status"] == "dead")
            info = {**details, "reason": reason, "quarantined": quarantined, "locks": locks}
            _, event = await tx.run((self._q["insert_failover_event"], {
                "event_type": event_type, "worker_id": worker_id,
                "recovered": len(jobs) - dead, "dead": dead,
                "detection_ms": heartbeat_age * 1000 if heartbeat_age is not None else None,
                "recovery_ms": (time.perf_counter() - started) * 1000, "details": to_json(info),
            }), (self._q["get_failover_event"], {}), commit=True)
        out = dict(event.rows[0])
        out.update(jobs=[(r["id"], r["status"]) for r in jobs], quarantined=quarantined,
                   locks=locks)
        return out

    @translated
    async def record_failover_event(
        self, event_type: str, worker_id: str | None, details: dict[str, Any]
    ) -> dict[str, Any]:
        async with self._conn() as conn:
            _, event = await script(conn, [(self._q["insert_failover_event"], {
                "event_type": event_type, "worker_id": worker_id, "recovered": 0, "dead": 0,
                "detection_ms": None, "recovery_ms": None, "details": to_json(details),
            }), (self._q["get_failover_event"], {})])
        return event.rows[0]

    @translated
    @retried
    async def recover_timed_out(self, grace: float) -> list[tuple[int, str]]:
        async with self._tx() as tx:
            [picked] = await tx.run((self._q["recover_timed_out"], {"grace": grace}))
            ids = [r["id"] for r in picked.rows]
            if not ids:
                return []
            _, _, states, _ = await tx.run(
                (self._q["recover_timed_out_by_ids"], {"ids": ids, "grace": grace}),
                (self._q["close_open_assignments"], {"ids": ids, "outcome": "timed_out"}),
                (self._q["job_states"], {"ids": ids}), self._notify(DISPATCH_CHANNEL),
                commit=True)
        return [(r["id"], r["status"]) for r in states.rows]

    @translated
    async def orphan_holders(self) -> list[str]:
        return [r["worker_id"] for r in await self._fetch(self._q["orphan_holders"])]

    @translated
    async def failover_events(
        self, worker_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self._fetch(self._q["list_failover_events"], worker_id=worker_id, limit=limit)

    # -- retention ---------------------------------------------------------------------
    async def _batches(self, sql: str, batch: int, **args: Any) -> int:
        """Run the DELETE `sql` (LIMIT %(batch)s) until one deletes fewer than `batch` rows.
        Returns: the rows deleted in all."""
        batch, total = max(batch, 1), 0
        while True:
            deleted = await self._execute(sql, batch=batch, **args)
            total += deleted
            if deleted < batch:
                return total

    @translated
    async def cleanup_health_checks(
        self, older_than_days: float, *, batch: int = RETENTION_BATCH
    ) -> int:
        age = micros(retention_seconds(older_than_days))
        return await self._batches(self._q["cleanup_health_checks"], batch, age_us=age)

    @translated
    async def cleanup_failover_events(
        self, older_than_days: float, *, batch: int = RETENTION_BATCH
    ) -> int:
        age = micros(retention_seconds(older_than_days))
        return await self._batches(self._q["cleanup_failover_events"], batch, age_us=age)

    @translated
    async def cleanup_orphaned_assignments(self, *, batch: int = RETENTION_BATCH) -> dict[str, int]:
        batch, deleted, closed, after = max(batch, 1), 0, 0, 0
        while True:
            ids = [r["id"] for r in await self._fetch(self._q["cleanup_gone_job_assignments"],
                                                      after=after, batch=batch)]
            if ids:
                deleted += await self._execute(self._q["delete_gone_job_assignments"], ids=ids)
            if len(ids) < batch:
                break
            after = ids[-1]
        while True:
            ids = [r["id"] for r in await self._fetch(self._q["close_orphaned_assignments"],
                                                      batch=batch)]
            if ids:
                closed += await self._execute(self._q["close_orphans"], ids=ids)
            if len(ids) < batch:
                break
        return {"deleted": deleted, "closed": closed}

    @translated
    async def cleanup_finished_jobs(
        self, older_than_days: float, statuses: Sequence[str] = ("succeeded", "cancelled"),
        *, batch: int = RETENTION_BATCH,
    ) -> int:
        age = micros(retention_seconds(older_than_days))
        wanted = finished_statuses(statuses)
        batch, deleted, after = max(batch, 1), 0, 0
        while wanted:
            args = {"statuses": wanted, "age_us": age}
            chunk = await self._fetch(self._q["cleanup_finished_jobs"], after=after,
                                      batch=batch, **args)
            due = [r["id"] for r in chunk if r["due"]]
            if due:
                async with self._conn() as conn:
                    gone = (await script(conn, [
                        ("START TRANSACTION", None),
                        (self._q["delete_finished_jobs"], {**args, "ids": due}),
                        (self._q["delete_assignments_of_gone_jobs"], {"ids": due}),
                        ("COMMIT", None)]))[1]
                deleted += gone.rowcount
            if len(chunk) < batch or all(r["past_cutoff"] for r in chunk):
                break
            after = chunk[-1]["id"]
        return deleted

    # -- backup and restore ------------------------------------------------------------
    @translated
    async def export_tables(self, write: Callable[[dict[str, Any] | list[Any]], Awaitable[None]]) -> None:
        conn = await connect(self._params)
        try:
            await mysql_backup.export_tables(conn, self._q, write)
        finally:
            conn.close()

    @translated
    async def import_tables(self, records: Iterable[dict[str, Any] | list[Any]]) -> dict[str, Any]:
        conn = await connect(self._params)
        try:
            return await mysql_backup.import_tables(conn, self._q, records)
        finally:
            conn.close()

    # -- performance -------------------------------------------------------------------
    @translated
    async def performance_stats(self) -> dict[str, Any]:
        async with self._conn() as conn:
            return await mysql_stats.performance_stats(conn, self._q)


def _percentiles(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 and p99 as percentile_cont computes them, from the rows start_latency picked."""
    if not ranks:
        return {"p50": None, "p99": None, "samples": 0}
    n = ranks[0]["n"]
    at = {r["rn"]: r["ms"] for r in ranks}

    def cont(p: str) -> float:
        x = 1 + Decimal(p) * (n - 1)  # as the query computed the ranks: exact decimals
        lo, frac = int(x), float(x - int(x))
        return at[lo] + (at[lo + 1] - at[lo]) * frac if frac else at[lo]

    return {"p50": cont("0.5"), "p99": cont("0.99"), "samples": n}
