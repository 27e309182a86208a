"""Storage contract: migrations, the specification's tables and indexes, lifecycle calls."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from backends import catalog

from qshared.errors import StorageError
from qshared.storage import open_storage
from qshared.storage.base import Storage

TABLES = {
    "jobs", "queue_workers", "distributed_locks", "job_assignments",
    "worker_health_checks", "failover_events", "schema_migrations",
}
# The specification's recommended indexes: name -> (table, columns).
SPEC_INDEXES = {
    "idx_worker_status_updated": ("queue_workers", ["status", "updated_at"]),
    "idx_worker_queues": ("queue_workers", ["queues"]),
    "idx_lock_expires_worker": ("distributed_locks", ["expires_at", "worker_id"]),
    "idx_assignment_worker_time": ("job_assignments", ["worker_id", "assigned_at"]),
    "idx_assignment_queue_time": ("job_assignments", ["queue_name", "assigned_at"]),
    "idx_health_worker_time": ("worker_health_checks", ["worker_id", "checked_at"]),
    "idx_health_status_time": ("worker_health_checks", ["status", "checked_at"]),
    "idx_failover_worker_time": ("failover_events", ["failed_worker_id", "failover_at"]),
    "idx_failover_event_type": ("failover_events", ["event_type", "failover_at"]),
}


async def test_migrate_is_idempotent(storage: Storage) -> None:
    assert await storage.migrate() == []
    assert await storage.migrate() == []
    status = await storage.migration_status()
    assert status[0]["name"] == "0001_init"
    assert all(isinstance(s["applied_at"], datetime) for s in status), status
    assert [s["version"] for s in status] == sorted(s["version"] for s in status)


async def test_migrate_applies_everything_once(unmigrated_storage: Storage) -> None:
    before = await unmigrated_storage.migration_status()
    assert before and all(s["applied_at"] is None for s in before)
    applied = await unmigrated_storage.migrate()
    assert applied == [s["name"] for s in before]
    after = await unmigrated_storage.migration_status()
    assert [s["name"] for s in after] == applied
    assert all(s["applied_at"] is not None for s in after)
    assert await unmigrated_storage.migrate() == []


async def test_concurrent_migrations_apply_each_file_once(db_url_unmigrated: str) -> None:
    first = await open_storage(db_url_unmigrated, pool_size=2)
    second = await open_storage(db_url_unmigrated, pool_size=2)
    try:
        results = await asyncio.gather(first.migrate(), second.migrate())
        names = [s["name"] for s in await first.migration_status()]
        # one of them did all the work, the other found nothing left to do
        assert sorted(results, key=len) == [[], names]
    finally:
        await first.close()
        await second.close()


async def test_tables_and_specification_indexes_exist(
    storage: Storage, backend: str, db_url: str
) -> None:
    tables, indexes = await catalog(backend, db_url)
    assert tables >= TABLES, f"missing tables: {TABLES - tables}"
    for name, (table, columns) in SPEC_INDEXES.items():
        assert name in indexes, f"missing index {name}"
        assert indexes[name] == (table, columns), f"{name} is {indexes[name]}"


async def test_lifecycle_calls(storage: Storage) -> None:
    await storage.ping()
    in_use, maximum = storage.pool_stats()
    assert maximum == 5  # the fixture opens the pool with pool_size=5
    assert 0 <= in_use <= maximum
    now = await storage.db_now()
    assert now.tzinfo is not None
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=30)


async def test_unreachable_database_raises_storage_error(backend: str) -> None:
    url = {
        "postgres": "postgresql://nobody@127.0.0.1:1/none",
        "mysql": "mysql://nobody@127.0.0.1:1/none",
    }[backend]
    with pytest.raises(StorageError):
        storage = await open_storage(url)
        await storage.close()


async def test_a_snapshot_is_computed_once_per_interval_across_replicas(
    storage: Storage, db_url: str
) -> None:
    """Two "replicas" (two pools on one database) asking at once: one computes, both get it."""
    other = await open_storage(db_url, pool_size=3)
    calls: list[str] = []

    def computer(who: str):
        async def compute() -> bytes:
            calls.append(who)
            await asyncio.sleep(0.2)  # long enough for the other to arrive and wait
            return f"by {who} #{len(calls)}".encode()
        return compute

    try:
        first = await asyncio.gather(
            storage.cached_snapshot("m", 30, computer("a")),
            other.cached_snapshot("m", 30, computer("b")),
        )
        assert len(calls) == 1 and first[0] == first[1] == f"by {calls[0]} #1".encode()
        # fresh: served as stored, whoever asks
        assert await other.cached_snapshot("m", 30, computer("b")) == first[0]
        assert len(calls) == 1
        # older than max_age: computed again; another name is its own snapshot
        await asyncio.sleep(0.3)
        assert await other.cached_snapshot("m", 0.25, computer("b")) == b"by b #2"
        assert await storage.cached_snapshot("n", 30, computer("a")) == b"by a #3"
    finally:
        await other.close()
