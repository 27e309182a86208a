"""infra/db's grant files on the real servers: under the runtime user they create, every path
the services take through the storage contract works; what lies outside its grants (DDL,
a migration) fails, and qstack says it is a permission problem and on what.

Per backend, one place for the module (tests/grant_places.py): the grant file applied with
its placeholders filled in, the migrations run as the owner. Each test uses ids of its own.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from backends import storage_backends
from grant_places import (
    GrantedPlace,
    admin_execute,
    granted_place,
    held_granted_place,
    refusal,
    runtime_privileges,
)

from qshared.backup import BackupReader, restore_backup, write_backup
from qshared.errors import StorageError
from qshared.storage import DISPATCH_CHANNEL, open_storage, worker_channel
from qshared.storage.base import TABLES, JobFilter, Outcome, Storage
from qshared.storage.sql_shared import migration_files

DML = {"SELECT", "INSERT", "UPDATE", "DELETE"}
HEALTHY = {"status": "healthy", "cpu_percent": 3.0, "memory_bytes": 1 << 20, "in_flight": 1,
           "loop_lag_ms": 0.2}
# The MySQL dialect's own tables (mysql.INTERNAL_TABLES), which the runtime user writes too.
MYSQL_BOOKKEEPING = {"qstack_sequences", "qstack_notifications"}


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


@pytest.fixture(scope="module", params=storage_backends())
def place(request: pytest.FixtureRequest) -> Iterator[GrantedPlace]:
    """The module's place on one backend, granted and migrated; dropped with its users."""
    server = request.getfixturevalue({"postgres": "pg_dsn", "mysql": "mysql_dsn"}[request.param])
    with held_granted_place(request.param, server) as made:
        yield made


@pytest.fixture
async def app(place: GrantedPlace) -> AsyncIterator[Storage]:
    """The storage as the services open it: logged in as the runtime user."""
    storage = await open_storage(place.app_url, pool_size=5)
    try:
        yield storage
    finally:
        await storage.close()


# -- the grants ---------------------------------------------------------------------------
async def test_the_owner_ran_every_migration(place: GrantedPlace, app: Storage) -> None:
    assert place.applied == [name for _, name, _ in migration_files(app.dialect)]
    assert all(m["applied_at"] is not None for m in await app.migration_status())


async def test_every_table_is_granted_to_the_runtime_user_and_nothing_more(
    place: GrantedPlace, app: Storage
) -> None:
    """A migration that adds a table without a line in the grant file fails here."""
    tables, granted, broader = await runtime_privileges(place)
    expected = set(TABLES) | (MYSQL_BOOKKEEPING if place.backend == "mysql" else set())
    assert tables == expected
    for table in tables:
        want = {"SELECT"} if place.backend == "mysql" and table == "schema_migrations" else DML
        assert granted.get(table) == want, table
    assert broader == [], "the runtime user has rights beyond the tables"


# -- what the services do, as the runtime user ----------------------------------------------
async def test_enqueue_dispatch_claim_and_report(app: Storage, make_job, make_worker) -> None:
    w, queue = uid("w"), uid("q")
    assert (await app.register_worker(make_worker(id=w, queues=[queue])))["status"] == "active"
    assert (await app.heartbeat(w, HEALTHY))["status"] == "active"
    dispatch_woke, worker_woke = asyncio.Event(), asyncio.Event()
    subs = [await app.subscribe(DISPATCH_CHANNEL, dispatch_woke.set),
            await app.subscribe(worker_channel(w), worker_woke.set)]
    try:
        ids = [e.id for e in await app.enqueue(
            [make_job(queue_name=queue) for _ in range(3)]
            + [make_job(queue_name=queue, unique_key=uid("once"), lock_key=uid("mutex"))])]
        await asyncio.wait_for(dispatch_woke.wait(), 2)
        assert any(s.id == w for s in await app.worker_slots(30))
        pairs = await app.dispatch([w], {queue: 10}, lambda jobs: [(j.id, w) for j in jobs])
        assert sorted(job for job, _ in pairs) == sorted(ids)
        if not app.push_wakeups:  # MySQL: the dispatcher POSTs to the worker instead
            await asyncio.wait_for(worker_woke.wait(), 2)
    finally:
        for sub in subs:
            await sub.close()
    claimed = {a.id: a for a in await app.claim_assigned(w, [])}
    assert sorted(claimed) == sorted(ids)
    # a second ago: the outcomes' finished times (now + 0.1) are in the past for the
    # throughput read below, whose window ends with the database's current second
    now = time.time() - 1.0
    assert await app.mark_running([(i, claimed[i].token, now) for i in ids]) == set(ids)
    ok, retry, dead, last = ids
    applied = await app.report([
        Outcome(ok, claimed[ok].token, "succeeded", started=now, finished=now + 0.1,
                result_json='{"ok": true}'),
        Outcome(retry, claimed[retry].token, "pending", started=now, finished=now + 0.1,
                error="boom", retry_in=3600),
        Outcome(dead, claimed[dead].token, "dead", started=now, finished=now + 0.1,
                error="fatal"),
    ])
    assert sorted(applied) == sorted([(ok, "succeeded"), (retry, "pending"), (dead, "dead")])
    assert (await app.get_job(ok))["result"] == {"ok": True}
    assert [a["outcome"] for a in await app.job_assignments(ok)] == ["succeeded"]
    assert (await app.retry_job(dead))["status"] == "pending"
    assert await app.cancel_jobs(JobFilter(ids=[dead]), 10) == [dead]
    assert await app.retry_jobs(JobFilter(ids=[dead]), 10) == [dead]
    assert await app.cancel_job(dead) is True
    assert await app.release_running(w, "test") == [(last, "pending")]
    assert {j["id"] for j in await app.list_jobs(queue=queue, status=None, task=None,
                                                 before_id=None, limit=10)} == set(ids)
    assert any(q["queue_name"] == queue for q in await app.queue_stats())
    assert (await app.set_queue_paused(queue, True))["paused"] is True
    assert (await app.set_queue_paused(queue, False))["paused"] is False
    assert any(q["queue_name"] == queue for q in await app.list_queues())
    assert sum(b["succeeded"] for b in (await app.throughput(60))["buckets"]) >= 1
    assert await app.cached_snapshot(uid("snap"), 10, _compute) == b"rendered"
    assert await app.next_due_in() is not None
    assert [r["job_id"] for r in await app.worker_assignments(w, 10)]
    assert [r for r in await app.worker_stats() if r.get("worker_id", r.get("id")) == w]
    assert [r for r in await app.resource_stats(60) if r.get("worker_id", r.get("id")) == w]
    assert await app.recent_health_checks(w, 5)
    assert (await app.request_worker(w, "drain"))["requested"] == "drain"
    assert await app.hand_back(w) == []
    assert (await app.set_worker_status(w, "stopped"))["status"] == "stopped"


async def _compute() -> bytes:
    return b"rendered"


async def test_locks_leases_and_liveness(app: Storage, make_worker) -> None:
    w, key, stale = uid("w"), uid("res"), uid("stale")
    await app.register_worker(make_worker(id=w))
    token, _ = await app.acquire_lock(key, "owner-a", 30, worker_id=w)
    assert await app.acquire_lock(key, "owner-b", 30) is None
    assert (await app.renew_lock(key, "owner-a", token, 60))[0] == token
    assert (await app.get_lock(key))["live"] is True
    assert key in {lock["lock_key"] for lock in await app.list_locks()}
    assert await app.release_lock(key, "owner-a", token) is True
    assert await app.acquire_lock(stale, "owner-c", 0.05)
    await asyncio.sleep(0.2)
    assert stale in await app.clear_stale_locks(0)

    held = await app.hold_liveness(w)
    try:
        assert {r["id"]: r["session_alive"] for r in await app.liveness()}[w] is True
        with pytest.raises(StorageError, match="held by another session"):
            await app.hold_liveness(w)
    finally:
        await held.close()
    deadline = time.monotonic() + 3
    while {r["id"]: r["session_alive"] for r in await app.liveness()}[w]:
        assert time.monotonic() < deadline, "the liveness lock outlived its session"
        await asyncio.sleep(0.05)
    started, uptime = await app.db_uptime()
    assert uptime > 0 and started < await app.db_now()


async def test_failover_recovery(app: Storage, make_job, make_worker) -> None:
    w, queue, key = uid("w"), uid("q"), uid("res")
    await app.register_worker(make_worker(id=w, queues=[queue]))
    running, waiting = [e.id for e in await app.enqueue(
        [make_job(queue_name=queue, max_attempts=1), make_job(queue_name=queue)])]
    await app.dispatch([w], {queue: 10}, lambda jobs: [(j.id, w) for j in jobs])
    claimed = {a.id: a for a in await app.claim_assigned(w, [])}
    assert await app.mark_running([(running, claimed[running].token, time.time())]) == {running}
    await app.acquire_lock(key, "owner-a", 30, worker_id=w)
    event = await app.recover_worker(w, reason=f"{w} died", event_type="worker_crashed",
                                     quarantine_after=3, details={"rule": "test"})
    assert sorted(event["jobs"]) == sorted([(running, "dead"), (waiting, "pending")])
    assert event["locks"] == [key]
    assert (await app.get_worker(w))["status"] == "failed"
    held_back = await app.record_failover_event("held_back", None, {"workers": [w]})
    assert held_back["event_type"] == "held_back"
    assert [e["event_type"] for e in await app.failover_events(w)] == ["worker_crashed"]
    assert isinstance(await app.orphan_holders(), list)
    assert isinstance(await app.recover_timed_out(30), list)


async def test_retention_clean_ups(app: Storage, make_job, make_worker) -> None:
    w, queue = uid("w"), uid("q")
    await app.register_worker(make_worker(id=w, queues=[queue]))
    await app.heartbeat(w, HEALTHY)
    await app.record_failover_event("held_back", None, {"workers": [w]})
    [job] = [e.id for e in await app.enqueue([make_job(queue_name=queue)])]
    await app.dispatch([w], {queue: 10}, lambda jobs: [(j.id, w) for j in jobs])
    [a] = await app.claim_assigned(w, [])
    now = time.time()
    await app.report([Outcome(job, a.token, "succeeded", started=now, finished=now)])
    assert await app.cleanup_health_checks(0) >= 1
    assert await app.cleanup_failover_events(0) >= 1
    assert set(await app.cleanup_orphaned_assignments()) == {"deleted", "closed"}
    assert await app.cleanup_finished_jobs(0, ("succeeded", "dead", "cancelled")) >= 1
    assert await app.get_job(job) is None


async def test_backup_export_and_statistics(app: Storage, make_job) -> None:
    await app.enqueue([make_job(queue_name=uid("q"))])
    buf = io.BytesIO()
    header = await write_backup(app, buf)
    assert set(header["tables"]) == set(TABLES) and header["tables"]["jobs"] >= 1
    assert "qstack_fencing_seq" in header["sequences"]
    records = list(BackupReader(io.BytesIO(buf.getvalue()), "grants").records())
    assert {r["table"] for r in records if isinstance(r, dict) and "table" in r} == set(TABLES)
    stats = await app.performance_stats()
    assert {t["table"] for t in stats["tables"]} >= {"jobs", "queue_workers"}
    assert "available" in stats["statements"]
    await app.ping()


# -- outside the grants -------------------------------------------------------------------
DDL = ["DROP TABLE jobs", "CREATE TABLE grants_probe (id INTEGER)",
       "ALTER TABLE jobs ADD COLUMN grants_probe INTEGER", "CREATE INDEX grants_probe ON jobs (id)",
       "TRUNCATE TABLE jobs"]


async def test_ddl_is_refused_to_the_runtime_user(place: GrantedPlace, app: Storage) -> None:
    refused = {sql: await refusal(place, sql) for sql in DDL}
    print("\n".join(f"{sql}: {why}" for sql, why in refused.items()))
    for sql, why in refused.items():
        assert why is not None, f"{sql!r} ran as the runtime user"
        if place.backend == "postgres":  # 42501 insufficient_privilege
            assert re.search(r"permission denied for schema|must be owner of (table|relation) "
                             r"jobs|permission denied for table jobs", why), why
        else:  # 1142 ER_TABLEACCESS_DENIED_ERROR
            assert re.search(r"\(1142, .*command denied to user .*for table .*(jobs|grants_probe)",
                             why), why
    assert (await app.queue_stats()) is not None  # jobs is still there


async def test_a_migration_as_the_runtime_user_fails_with_a_clear_error(
    place: GrantedPlace, app: Storage
) -> None:
    """A release with a pending migration, started with the runtime user's DSN: migrate()
    raises a StorageError naming the refused right and its object, and changes nothing."""
    version, name, sql = migration_files(app.dialect)[-1]
    await admin_execute(place, f"DELETE FROM schema_migrations WHERE version = {version}")
    try:
        with pytest.raises(StorageError) as caught:
            await app.migrate()
        message = str(caught.value)
        print(message)
        if place.backend == "postgres":
            # the first thing migrate() does is CREATE TABLE IF NOT EXISTS schema_migrations
            assert f'permission denied for schema {place.name}' in message
            assert "InsufficientPrivilegeError" in message
        else:
            [table] = re.findall(r"(?:ALTER|CREATE) TABLE (\w+)", sql)[:1]
            assert re.search(rf"\(1142, .*command denied to user '{place.app}'@.*{table}",
                             message), message
        pending = [m["name"] for m in await app.migration_status() if m["applied_at"] is None]
        assert pending == [name]
    finally:
        await admin_execute(place, "INSERT INTO schema_migrations (version, name) VALUES "
                                   f"({version}, '{name}')")


# -- restore: the owner's job -----------------------------------------------------------
async def _backup_with_a_gap(app: Storage, make_job) -> bytes:
    """A backup whose jobs counter is past its largest job id (the newest job was deleted),
    so that a restore must move the counter (MySQL: ALTER TABLE ... AUTO_INCREMENT)."""
    queue = uid("q")
    *_, newest = [e.id for e in await app.enqueue([make_job(queue_name=queue)] * 2)]
    assert await app.cancel_job(newest)
    assert await app.cleanup_finished_jobs(0, ("cancelled",)) >= 1
    buf = io.BytesIO()
    await write_backup(app, buf)
    return buf.getvalue()


async def test_the_owner_restores_a_backup(place: GrantedPlace, app: Storage, make_job) -> None:
    data = await _backup_with_a_gap(app, make_job)
    async with granted_place(place.backend, place.server_url) as target:
        owner = await open_storage(target.owner_url, pool_size=2)
        try:
            restored = await restore_backup(owner, io.BytesIO(data), "grants")
        finally:
            await owner.close()
        header = BackupReader(io.BytesIO(data), "grants").header
        assert restored["tables"]["jobs"] == header["tables"]["jobs"]
        assert restored["sequences"]["jobs.id"] >= header["sequences"]["jobs.id"]
        # and the services carry on there as the runtime user
        target_app = await open_storage(target.app_url, pool_size=2)
        try:
            [new] = await target_app.enqueue([make_job()])
            assert new.id > header["sequences"]["jobs.id"]
        finally:
            await target_app.close()


async def test_a_restore_as_the_runtime_user_is_refused_before_it_loads_anything(
    place: GrantedPlace, app: Storage, make_job
) -> None:
    data = await _backup_with_a_gap(app, make_job)
    async with granted_place(place.backend, place.server_url) as target:
        target_app = await open_storage(target.app_url, pool_size=2)
        try:
            with pytest.raises(StorageError) as caught:
                await restore_backup(target_app, io.BytesIO(data), "grants")
            print(caught.value)
            assert re.search(r"permission denied|command denied", str(caught.value))
            left = await target_app.list_jobs(queue=None, status=None, task=None,
                                              before_id=None, limit=10)
        finally:
            await target_app.close()
        assert left == [], "the refused restore left rows behind: restore into a new database"
