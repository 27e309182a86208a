"""The PostgreSQL backend (asyncpg): the reference implementation of the storage contract."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from qshared.errors import StorageError
from qshared.storage import pg_backup, pg_stats
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
from qshared.storage.pg_sessions import PgLiveness, PgSubscription, liveness_key
from qshared.storage.queries import load_queries
from qshared.storage.sql_shared import latest_outcomes, migration_files

log = logging.getLogger(__name__)

_TRANSIENT = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def _translated(fn):
    """Turn driver errors into StorageError at the backend boundary."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except StorageError:
            raise
        except _TRANSIENT as exc:
            raise StorageError(f"postgres: {type(exc).__name__}: {exc}") from exc
        except asyncpg.InternalClientError as exc:
            # A pooled connection left mid-operation (seen after a database restart): the
            # pool hands out fresh connections from now on, and the caller may retry.
            pool = getattr(args[0], "_pool", None) if args else None
            if pool is not None:
                pool.expire_connections()
            raise StorageError(f"postgres: {type(exc).__name__}: {exc}") from exc

    return wrapper


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Pooled connections go back as they are: qstack sets no session state on them (its
    advisory locks and LISTENs live on connections of their own), and asyncpg's default reset
    costs a round trip on every release.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
    )


class PostgresStorage(Storage):
    """Storage on PostgreSQL 13+."""

    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool, dsn: str, max_size: int, schema: str = "public") -> None:
        self._pool = pool
        self._schema = schema  # advisory locks are per database: the key names the schema too
        self._dsn = dsn
        self._max = max_size
        self._q = load_queries("postgres")

    @classmethod
    @_translated
    async def open(
        cls, dsn: str, *, pool_size: int = 20, max_idle: float = 3600, min_size: int = 1,
        durable: bool = True,
    ) -> PostgresStorage:
        dsn = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
        # durable=False: commits return before the WAL reaches disk (synchronous_commit=off).
        # For writes a database crash may take back without breaking at-least-once.
        settings = {} if durable else {"synchronous_commit": "off"}
        pool = await asyncpg.create_pool(
            dsn, min_size=min(min_size, pool_size), max_size=pool_size,
            max_inactive_connection_lifetime=max_idle, init=_init_connection,
            command_timeout=60, server_settings=settings, reset=_no_reset,
        )
        schema = await pool.fetchval("SELECT current_schema()")
        return cls(pool, dsn, pool_size, schema or "public")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pool.close(), timeout=10)

    @_translated
    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1", timeout=5)

    def pool_stats(self) -> tuple[int, int]:
        return self._pool.get_size() - self._pool.get_idle_size(), self._max

    # -- migrations --------------------------------------------------------------------
    @_translated
    async def migrate(self) -> list[str]:
        applied_now = []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('qstack:migrate'))")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migration_files(self.dialect):
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
                applied_now.append(name)
        return applied_now

    @_translated
    async def migration_status(self) -> list[dict[str, Any]]:
        exists = await self._pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        rows = {}
        if exists:
            rows = {
                r["version"]: r["applied_at"]
                for r in await self._pool.fetch("SELECT version, applied_at FROM schema_migrations")
            }
        return [
            {"version": v, "name": n, "applied_at": rows.get(v)}
            for v, n, _ in migration_files(self.dialect)
        ]

    # -- jobs --------------------------------------------------------------------------
    @_translated
    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        if not jobs:
            return []
        cols = (
            [j.queue_name for j in jobs], [j.task_name for j in jobs],
            [j.payload_json for j in jobs], [j.priority for j in jobs],
            [j.max_attempts for j in jobs], [j.timeout for j in jobs],
            [j.delay_s for j in jobs], [j.unique_key for j in jobs],
            [j.lock_key for j in jobs],
        )
        rows = await self._pool.fetch(self._q["enqueue"], *cols)
        out = [Enqueued(r["id"], r["created"]) for r in rows]
        missing = [r["unique_key"] for r in rows if not r["created"]]
        if missing:
            known = {
                r["unique_key"]: r["id"]
                for r in await self._pool.fetch(self._q["ids_by_unique_key"], missing)
            }
            for i, r in enumerate(rows):
                if not r["created"]:
                    out[i] = Enqueued(known[r["unique_key"]], False)
        return out

    @_translated
    async def get_job(self, job_id: int) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(self._q["get_job"], job_id)
        return dict(row) if row else None

    @_translated
    async def job_assignments(self, job_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["job_assignments"], job_id)]

    async def _cancel(self, sql: str, *args: Any) -> list[int]:
        """Cancel with `sql` (it returns id, token), then close the assignment rows."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(sql, *args)
            if rows:
                await conn.execute(self._q["close_cancelled_assignments"],
                                   [r["id"] for r in rows], [r["token"] for r in rows])
        return [r["id"] for r in rows]

    @_translated
    async def cancel_job(self, job_id: int) -> bool:
        return bool(await self._cancel(self._q["cancel_job"], job_id))

    @_translated
    async def retry_job(self, job_id: int) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(self._q["retry_job"], job_id)
        if row is None:
            return None
        job = dict(row)
        del job["woke"]
        return job

    def _filter_args(self, match: JobFilter, limit: int) -> tuple[Any, ...]:
        ids = list(match.ids) if match.ids is not None else None
        return ids, match.queue, match.status, match.task, limit

    @_translated
    async def retry_jobs(self, match: JobFilter, limit: int) -> list[int]:
        rows = await self._pool.fetch(self._q["retry_jobs"], *self._filter_args(match, limit))
        return [r["id"] for r in rows]

    @_translated
    async def cancel_jobs(self, match: JobFilter, limit: int) -> list[int]:
        return await self._cancel(self._q["cancel_jobs"], *self._filter_args(match, limit))

    @_translated
    async def list_jobs(
        self, *, queue: str | None, status: str | None, task: str | None,
        before_id: int | None, limit: int,
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(self._q["list_jobs"], queue, status, task, before_id, limit)
        return [dict(r) for r in rows]

    @_translated
    async def queue_stats(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["queue_stats"])]

    @_translated
    async def list_queues(self) -> list[dict[str, Any]]:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            stats = {r["queue_name"]: dict(r) for r in await conn.fetch(self._q["queue_stats"])}
            paused = {r["queue_name"]: r["paused"] for r in await conn.fetch(self._q["paused_flags"])}
        empty = {k: 0 for k in ("pending", "scheduled", "assigned", "running", "succeeded",
                                "failed", "dead", "cancelled")} | {"oldest_pending_age_s": 0.0}
        return [
            {"queue_name": name, **stats.get(name, empty), "paused": paused.get(name, False)}
            for name in sorted(stats.keys() | paused.keys())
        ]

    @_translated
    async def set_queue_paused(self, queue: str, paused: bool) -> dict[str, Any]:
        row = dict(await self._pool.fetchrow(self._q["set_queue_paused"], queue, paused))
        del row["woke"]
        return row

    @_translated
    async def throughput(self, seconds: int) -> dict[str, Any]:
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            # one transaction: both reads see the same now()
            buckets = [dict(r) for r in await conn.fetch(self._q["throughput"], seconds)]
            latency = dict(await conn.fetchrow(self._q["start_latency"], seconds))
        return {"buckets": buckets, "latency": latency}

    @_translated
    async def cached_snapshot(
        self, name: str, max_age: float, compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._q["snapshot_ensure"], name)
            row = await conn.fetchrow(self._q["snapshot_lock"], name, max_age)
            if row["fresh"]:
                return bytes(row["body"])
            body = await compute()
            await conn.execute(self._q["snapshot_put"], name, body)
            return body

    # -- dispatch ----------------------------------------------------------------------
    @_translated
    async def worker_slots(self, heartbeat_ttl: float) -> list[WorkerSlots]:
        rows = await self._pool.fetch(self._q["worker_capacity"], heartbeat_ttl)
        return [
            WorkerSlots(
                r["id"], tuple(q for q in r["queues"].split(",") if q),
                r["concurrency"] + r["prefetch"], r["in_flight"], r["admin_url"],
                r["concurrency"],
            )
            for r in rows
        ]

    @_translated
    async def dispatch(
        self, worker_ids: Sequence[str], queue_limits: dict[str, int], choose: Chooser
    ) -> list[tuple[int, str]]:
        async with self._pool.acquire() as conn, conn.transaction():
            locked = {r["id"] for r in await conn.fetch(self._q["lock_workers"], list(worker_ids))}
            if not locked:
                return []
            names = list(queue_limits)
            rows = await conn.fetch(
                self._q["pick_pending"], names, [queue_limits[n] for n in names]
            )
            if not rows:
                return []
            pending = [
                PendingJob(r["id"], r["queue_name"], r["priority"], r["run_at"], r["lock_key"])
                for r in rows
            ]
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
            if pairs:
                await conn.execute(
                    self._q["assign"], [p[0] for p in pairs], [p[1] for p in pairs]
                )
            return pairs

    @_translated
    async def next_due_in(self) -> float | None:
        return await self._pool.fetchval(self._q["next_due_in"])

    # -- worker side -------------------------------------------------------------------
    @_translated
    async def claim_assigned(self, worker_id: str, held: Sequence[int]) -> list[Assignment]:
        rows = await self._pool.fetch(self._q["claim_assigned"], worker_id, list(held))
        return [
            Assignment(
                r["id"], r["token"], r["queue_name"], r["task_name"], r["payload"],
                r["priority"], r["attempts"], r["max_attempts"], r["timeout"],
                r["created_at"], r["run_at"],
            )
            for r in rows
        ]

    @_translated
    async def mark_running(self, starts: Sequence[tuple[int, int, float]]) -> set[int]:
        if not starts:
            return set()
        rows = await self._pool.fetch(
            self._q["mark_running"], [s[0] for s in starts], [s[1] for s in starts],
            [s[2] for s in starts],
        )
        return {r["id"] for r in rows}

    @_translated
    async def report(self, outcomes: Sequence[Outcome]) -> list[tuple[int, str]]:
        outcomes = latest_outcomes(outcomes)
        if not outcomes:
            return []
        rows = await self._pool.fetch(
            self._q["report"],
            [o.id for o in outcomes], [o.token for o in outcomes],
            [o.status for o in outcomes], [o.started for o in outcomes],
            [o.finished for o in outcomes], [o.result_json for o in outcomes],
            [o.error for o in outcomes], [o.retry_in for o in outcomes],
        )
        return [(r["id"], r["status"]) for r in rows]

    @_translated
    async def hand_back(self, worker_id: str) -> list[int]:
        return [r["id"] for r in await self._pool.fetch(self._q["hand_back"], worker_id)]

    @_translated
    async def release_running(self, worker_id: str, reason: str) -> list[tuple[int, str]]:
        rows = await self._pool.fetch(self._q["release_running"], worker_id, reason)
        return [(r["id"], r["status"]) for r in rows]

    @_translated
    async def subscribe(self, channel: str, callback: Callback) -> Subscription:
        sub = PgSubscription(self._dsn, channel, callback)
        await sub.start()
        return sub

    # -- registry ----------------------------------------------------------------------
    @_translated
    async def register_worker(self, worker: dict[str, Any]) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            self._q["register_worker"], worker["id"], worker["hostname"], worker["pid"],
            ",".join(worker["queues"]), worker["concurrency"], worker.get("prefetch", 0),
            worker.get("version", ""), worker.get("admin_url"), worker.get("config") or {},
        )
        return dict(row)

    @_translated
    async def heartbeat(
        self, worker_id: str, health: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(self._q["heartbeat"], worker_id)
            if row is None:
                return None
            if health is not None:
                await conn.execute(
                    self._q["insert_health_check"], worker_id, health["status"],
                    health.get("cpu_percent"), health.get("memory_bytes"),
                    health.get("in_flight"), health.get("loop_lag_ms"),
                    health.get("details") or {},
                )
            return dict(row)

    @_translated
    async def set_worker_status(
        self, worker_id: str, status: str, requested: str | None = None,
        from_states: Sequence[str] = WORKER_STATES,
    ) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            self._q["set_worker_status"], worker_id, status, requested, list(from_states)
        )
        return dict(row) if row else None

    @_translated
    async def request_worker(self, worker_id: str, request: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(self._q["request_worker"], worker_id, request)
        return dict(row) if row else None

    @_translated
    async def get_worker(self, worker_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(self._q["get_worker"], worker_id)
        return dict(row) if row else None

    @_translated
    async def list_workers(self, status: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["list_workers"], status)]

    @_translated
    async def worker_stats(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["worker_stats"])]

    @_translated
    async def recent_health_checks(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(self._q["recent_health_checks"], worker_id, limit)
        return [dict(r) for r in rows]

    @_translated
    async def resource_stats(self, seconds: float) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["resource_stats"], seconds)]

    @_translated
    async def worker_assignments(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(self._q["worker_assignments"], worker_id, limit)
        return [dict(r) for r in rows]

    # -- locks -------------------------------------------------------------------------
    @_translated
    async def acquire_lock(
        self, key: str, owner: str, ttl: float, worker_id: str | None = None
    ) -> tuple[int, datetime] | None:
        row = await self._pool.fetchrow(self._q["acquire_lock"], key, owner, worker_id, ttl)
        return (row["token"], row["expires_at"]) if row else None

    @_translated
    async def renew_lock(
        self, key: str, owner: str, token: int, ttl: float
    ) -> tuple[int, datetime] | None:
        row = await self._pool.fetchrow(self._q["renew_lock"], key, owner, token, ttl)
        return (row["token"], row["expires_at"]) if row else None

    @_translated
    async def release_lock(self, key: str, owner: str, token: int) -> bool:
        return await self._pool.fetchval(self._q["release_lock"], key, owner, token) is not None

    @_translated
    async def get_lock(self, key: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(self._q["get_lock"], key)
        return dict(row) if row else None

    @_translated
    async def list_locks(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._pool.fetch(self._q["list_locks"])]

    @_translated
    async def clear_stale_locks(self, grace: float) -> list[str]:
        return [r["lock_key"] for r in await self._pool.fetch(self._q["clear_stale_locks"], grace)]

    @_translated
    async def db_now(self) -> datetime:
        return await self._pool.fetchval(self._q["db_now"])

    # -- liveness and failover ---------------------------------------------------------
    @_translated
    async def hold_liveness(self, worker_id: str) -> Subscription:
        holder = PgLiveness(self._dsn, liveness_key(self._schema, worker_id))
        await holder.start()
        return holder

    @_translated
    async def liveness(self) -> list[dict[str, Any]]:
        rows = [dict(r) for r in await self._pool.fetch(self._q["liveness_candidates"])]
        keys = {liveness_key(self._schema, r["id"]): r for r in rows}
        held = {
            r["key"] for r in await self._pool.fetch(self._q["held_advisory_locks"], list(keys))
        } if keys else set()
        for key, row in keys.items():
            row["session_alive"] = key in held
        return rows

    @_translated
    async def db_uptime(self) -> tuple[datetime, float]:
        row = await self._pool.fetchrow(self._q["db_uptime"])
        return row["started_at"], row["uptime_s"]

    @_translated
    async def recover_worker(
        self, worker_id: str, *, reason: str, event_type: str, quarantine_after: int,
        details: dict[str, Any], mark_failed: bool = True,
    ) -> dict[str, Any] | None:
        started = time.perf_counter()
        async with self._pool.acquire() as conn, conn.transaction():
            heartbeat_age = None
            if mark_failed:
                failed = await conn.fetchrow(self._q["fail_worker"], worker_id)
                if failed is None:
                    return None
                heartbeat_age = failed["heartbeat_age_s"]
            jobs = await conn.fetch(
                self._q["recover_worker_jobs"], worker_id, reason, quarantine_after
            )
            locks = [r["lock_key"] for r in await conn.fetch(self._q["release_worker_locks"],
                                                             worker_id)]
            quarantined = [r["id"] for r in jobs
                           if r["status"] == "dead" and r["crash_count"] >= quarantine_after]
            dead = sum(1 for r in jobs if r["status"] == "dead")
            info = {**details, "reason": reason, "quarantined": quarantined, "locks": locks}
            event = await conn.fetchrow(
                self._q["insert_failover_event"], event_type, worker_id, len(jobs) - dead, dead,
                heartbeat_age * 1000 if heartbeat_age is not None else None,
                (time.perf_counter() - started) * 1000, info,
            )
        out = dict(event)
        out.update(jobs=[(r["id"], r["status"]) for r in jobs], quarantined=quarantined,
                   locks=locks)
        return out

    @_translated
    async def record_failover_event(
        self, event_type: str, worker_id: str | None, details: dict[str, Any]
    ) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            self._q["insert_failover_event"], event_type, worker_id, 0, 0, None, None, details
        )
        return dict(row)

    @_translated
    async def recover_timed_out(self, grace: float) -> list[tuple[int, str]]:
        rows = await self._pool.fetch(self._q["recover_timed_out"], grace)
        return [(r["id"], r["status"]) for r in rows]

    @_translated
    async def orphan_holders(self) -> list[str]:
        return [r["worker_id"] for r in await self._pool.fetch(self._q["orphan_holders"])]

    @_translated
    async def failover_events(
        self, worker_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(self._q["list_failover_events"], worker_id, limit)
        return [dict(r) for r in rows]

    # -- retention ---------------------------------------------------------------------
    async def _batches(self, name: str, *args: Any, batch: int) -> int:
        """Run the batch statement `name` (its last parameter: the batch size) until a batch
        changes fewer than `batch` rows. Returns: the rows changed in all."""
        batch = max(batch, 1)
        total = 0
        while True:
            changed = await self._pool.fetchval(self._q[name], *args, batch)
            total += changed
            if changed < batch:
                return total

    @_translated
    async def cleanup_health_checks(
        self, older_than_days: float, *, batch: int = RETENTION_BATCH
    ) -> int:
        seconds = retention_seconds(older_than_days)
        return await self._batches("cleanup_health_checks", seconds, batch=batch)

    @_translated
    async def cleanup_failover_events(
        self, older_than_days: float, *, batch: int = RETENTION_BATCH
    ) -> int:
        seconds = retention_seconds(older_than_days)
        return await self._batches("cleanup_failover_events", seconds, batch=batch)

    @_translated
    async def cleanup_orphaned_assignments(self, *, batch: int = RETENTION_BATCH) -> dict[str, int]:
        batch, deleted, after = max(batch, 1), 0, 0
        while True:
            row = await self._pool.fetchrow(self._q["cleanup_gone_job_assignments"], after, batch)
            deleted += row["deleted"]
            if row["deleted"] < batch:
                break
            after = row["last_id"]
        closed = await self._batches("close_orphaned_assignments", batch=batch)
        return {"deleted": deleted, "closed": closed}

    @_translated
    async def cleanup_finished_jobs(
        self, older_than_days: float, statuses: Sequence[str] = ("succeeded", "cancelled"),
        *, batch: int = RETENTION_BATCH,
    ) -> int:
        seconds = retention_seconds(older_than_days)
        wanted = finished_statuses(statuses)
        batch, deleted, after = max(batch, 1), 0, 0
        while wanted:
            row = await self._pool.fetchrow(
                self._q["cleanup_finished_jobs"], after, seconds, wanted, batch
            )
            deleted += row["deleted"]
            if row["last_id"] is None or row["past_cutoff"]:
                break
            after = row["last_id"]
        return deleted

    # -- backup and restore ------------------------------------------------------------
    @_translated
    async def export_tables(self, write: Callable[[dict[str, Any] | list[Any]], Awaitable[None]]) -> None:
        conn = await pg_backup.connect(self._dsn)
        try:
            await pg_backup.export_tables(conn, self._q, write)
        finally:
            await conn.close()

    @_translated
    async def import_tables(self, records: Iterable[dict[str, Any] | list[Any]]) -> dict[str, Any]:
        conn = await pg_backup.connect(self._dsn)
        try:
            return await pg_backup.import_tables(conn, self._q, self._schema, records)
        finally:
            await conn.close()

    # -- performance -------------------------------------------------------------------
    @_translated
    async def performance_stats(self) -> dict[str, Any]:
        return await pg_stats.performance_stats(self._pool, self._q)
