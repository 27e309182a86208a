"""What only the MySQL backend has to prove: its polled wake-ups, the GET_LOCK liveness lock
against a killed process, its performance statistics, that the portable backup carries
a PostgreSQL database over to MySQL and back, and that a dispatch pass's worker count reads
only the jobs in flight."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import pytest
from backends import mysql_params
from raw_sql import raw_sql, rows_read
from test_backup import dump, populate

from qshared.backup import restore_backup
from qshared.storage import DISPATCH_CHANNEL, open_storage
from qshared.storage.base import TABLES, NewJob, Outcome, Storage
from qshared.storage.mysql import INTERNAL_TABLES
from qshared.storage.queries import load_queries


@pytest.fixture
async def my(mysql_url: str) -> AsyncIterator[Storage]:
    storage = await open_storage(mysql_url, pool_size=3)
    try:
        yield storage
    finally:
        await storage.close()


async def test_a_wake_up_committed_after_a_newer_one_is_still_delivered(
    my: Storage, mysql_url: str
) -> None:
    """Notification ids are handed out at insert and seen at commit: one that commits after
    a later id was seen must still reach the subscriber."""
    q = load_queries("mysql")
    calls: list[float] = []
    woke = asyncio.Event()

    def wake() -> None:
        calls.append(time.monotonic())
        woke.set()

    sub = await my.subscribe(DISPATCH_CHANNEL, wake)
    slow = await aiomysql.connect(**mysql_params(mysql_url), autocommit=True)
    try:
        async with slow.cursor() as cur:
            await cur.execute("START TRANSACTION")
            await cur.execute(q["notify"], {"channel": DISPATCH_CHANNEL})  # the smaller id
            await my.set_queue_paused("q", False)  # a larger id, committed at once
            await asyncio.wait_for(woke.wait(), timeout=1.0)
            await asyncio.sleep(0.2)
            seen = len(calls)
            woke.clear()
            await cur.execute("COMMIT")
        await asyncio.wait_for(woke.wait(), timeout=1.0)  # not lost behind the newer id
        assert len(calls) > seen
    finally:
        slow.close()
        await sub.close()


async def test_a_commit_wakes_the_same_processs_subscribers_before_it_returns(
    my: Storage, mysql_url: str
) -> None:
    """The dispatcher beside the scheduler that took a job hears of it at commit, not at
    the next poll; another process's storage (its own pool) still hears of it by polling."""
    here: list[str] = []
    there = asyncio.Event()
    other = await open_storage(mysql_url, pool_size=1)
    subs = [await my.subscribe(DISPATCH_CHANNEL, lambda: here.append("woken")),
            await other.subscribe(DISPATCH_CHANNEL, there.set)]
    try:
        await asyncio.sleep(0.2)  # nothing yet
        assert here == [] and not there.is_set()
        await my.enqueue([NewJob("default", "noop", "{}")])
        assert here == ["woken"]  # before enqueue returned: no poll could have run since
        await asyncio.wait_for(there.wait(), timeout=2.0)
        await subs[0].close()
        calls = len(here)  # (its poll may have called back once more meanwhile)
        await my.enqueue([NewJob("default", "noop", "{}")])
        assert len(here) == calls  # a closed one is not called
    finally:
        for sub in subs:
            await sub.close()
        await other.close()


async def test_a_killed_workers_liveness_lock_is_free_at_once(
    my: Storage, mysql_url: str, make_worker
) -> None:
    await my.register_worker(make_worker(id="doomed"))
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", textwrap.dedent(f"""
        import asyncio
        from qshared.storage import open_storage

        async def main():
            storage = await open_storage({mysql_url!r}, pool_size=1)
            await storage.hold_liveness("doomed")
            print("held", flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """), stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"held"
        assert {w["id"]: w["session_alive"] for w in await my.liveness()} == {"doomed": True}
        os.kill(holder.pid, signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), 10)
        started = time.monotonic()
        while (await my.liveness())[0]["session_alive"]:
            assert time.monotonic() - started < 2.0, "the lock outlived its process"
            await asyncio.sleep(0.02)
    finally:
        if holder.returncode is None:
            holder.kill()
            await asyncio.wait_for(holder.wait(), 10)


async def test_performance_stats_have_the_postgresql_keys(my: Storage, make_job) -> None:
    await my.enqueue([make_job() for _ in range(20)])
    stats = await my.performance_stats()
    assert set(stats) == {"server", "tables", "indexes", "statements", "latency_ms"}
    server = stats["server"]
    assert server["version"][:2].isdigit() and server["database"] == server["schema"]
    assert 1 <= server["connections"] <= server["max_connections"]
    assert server["database_bytes"] > 0 and server["started_at"].tzinfo is not None
    tables = {t["table"]: t for t in stats["tables"]}
    assert set(tables) == set(TABLES)  # the data model's tables, not INTERNAL_TABLES
    assert not set(INTERNAL_TABLES) & set(tables)
    assert tables["jobs"]["total_bytes"] >= tables["jobs"]["table_bytes"] > 0
    indexes = {i["index"] for i in stats["indexes"] if i["table"] == "jobs"}
    assert {"PRIMARY", "idx_jobs_dispatch", "idx_jobs_unique_key", "idx_jobs_lock_active"} <= indexes
    statements = stats["statements"]
    assert statements["available"] or ("performance_schema" in statements["note"]
                                       and statements["rows"] == [])
    latency = stats["latency_ms"]
    assert latency["samples"] == 20 and 0 < latency["min"] <= latency["max"] < 5000


@pytest.fixture
async def pg_and_mysql(
    pg_url: str, mysql_url_unmigrated: str, pg_url_unmigrated: str
) -> AsyncIterator[tuple[Storage, Storage, Storage]]:
    opened = [await open_storage(url, pool_size=3)
              for url in (pg_url, mysql_url_unmigrated, pg_url_unmigrated)]
    try:
        yield opened[0], opened[1], opened[2]
    finally:
        for storage in opened:
            await storage.close()


def _comparable(table: dict[str, Any]) -> list[list[Any]]:
    """Rows with JSON columns parsed: each database spells the same JSON its own way."""
    import orjson

    kinds = table["types"]
    return [[orjson.loads(orjson.dumps(v)) if k == "json" else v for v, k in zip(row, kinds, strict=True)]
            for row in table["rows"]]


async def test_a_postgresql_backup_restores_into_mysql_and_back(
    pg_and_mysql: tuple[Storage, Storage, Storage], make_job, make_worker
) -> None:
    pg, my, pg_again = pg_and_mysql

    async def add_worker(**overrides: Any) -> dict[str, Any]:
        return await pg.register_worker(make_worker(**overrides))

    async def assign(worker_id: str, queues=("default",), limit: int = 100) -> list[int]:
        pairs = await pg.dispatch([worker_id], {q: limit for q in queues},
                                  lambda jobs: [(j.id, worker_id) for j in jobs])
        return [job_id for job_id, _ in pairs]

    async def outcome(job_id: int, status: str, **fields: Any) -> Outcome:
        return Outcome(id=job_id, token=(await pg.get_job(job_id))["token"], status=status,
                       **fields)

    ids = await populate(pg, make_job, add_worker, assign, outcome)
    header, tables, data = await dump(pg)
    result = await restore_backup(my, io.BytesIO(data), "from-postgres.qsb")
    assert result["tables"] == {t: n for t, n in header["tables"].items()
                                if t != "schema_migrations"}
    for state, job_id in ids.items():
        assert await my.get_job(job_id) == await pg.get_job(job_id), state
    assert await my.list_queues() == await pg.list_queues()
    assert await my.cached_snapshot("metrics", 3600, _never) == \
        await pg.cached_snapshot("metrics", 3600, _never)

    mysql_header, in_mysql, mysql_data = await dump(my)
    for table in TABLES:
        if table != "schema_migrations":
            assert in_mysql[table]["columns"] == tables[table]["columns"], table
            assert _comparable(in_mysql[table]) == _comparable(tables[table]), table
    fencing = "qstack_fencing_seq"
    assert mysql_header["sequences"][fencing] >= header["sequences"][fencing]
    await restore_backup(pg_again, io.BytesIO(mysql_data), "from-mysql.qsb")
    for state, job_id in ids.items():
        assert await pg_again.get_job(job_id) == await pg.get_job(job_id), state
    # new ids and tokens on MySQL go on above the restored ones
    [new] = await my.enqueue([make_job()])
    assert new.id > max(ids.values())
    token, _ = await my.acquire_lock("after-restore", "me", 30)
    assert token > header["sequences"][fencing]


async def _never() -> bytes:
    raise AssertionError("the restored snapshot is fresh: nothing to compute")


async def test_a_dispatch_pass_reads_only_the_jobs_a_worker_holds(
    my: Storage, mysql_url: str, make_worker
) -> None:
    """worker_capacity counts a worker's assigned and running jobs on both parts of
    idx_jobs_worker_active. By worker_id alone it read every job the worker had ever run (a
    thousand rows per worker per pass after a few thousand jobs); by the dispatch index,
    every job in flight anywhere. Here w1 has run 400 jobs and holds 3; a stopped w2 still
    holds 400 (a failover would take them back)."""
    await my.register_worker(make_worker(id="w1", concurrency=4))
    await my.register_worker(make_worker(id="w2", concurrency=4))
    await my.set_worker_status("w2", "stopped")
    async with raw_sql("mysql", mysql_url) as raw:
        await raw.execute(
            "INSERT INTO jobs (queue_name, task_name, payload, status, worker_id)"
            " WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 800)"
            " SELECT 'default', 'noop', '{}', CASE WHEN i <= 2 THEN 'running'"
            " WHEN i = 3 THEN 'assigned' WHEN i <= 400 THEN 'succeeded' ELSE 'running' END,"
            " CASE WHEN i <= 400 THEN 'w1' ELSE 'w2' END FROM n")
        await raw.fetch("ANALYZE TABLE jobs")
        capacity = load_queries("mysql")["worker_capacity"], {"ttl_us": 60_000_000}
        rows = [tuple(r.values()) for r in await raw.fetch(*capacity)]
        reads, _ = await rows_read(raw, *capacity)
    assert [(r[0], r[-1]) for r in rows] == [("w1", 3)]  # (id, in_flight)
    print(f"rows read for one worker with 3 jobs in flight: {reads}")
    assert reads < 50, reads
