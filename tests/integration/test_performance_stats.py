"""Storage contract: performance_stats on PostgreSQL, its numbers checked against what the
test did."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from backends import with_database

from qshared.storage import open_storage
from qshared.storage.base import TABLES, Storage

SERVER_KEYS = {"version", "version_full", "database", "schema", "database_bytes", "connections",
               "max_connections", "database_connections", "cache_hit_ratio", "commits",
               "rollbacks", "deadlocks", "temp_files", "temp_bytes", "stats_reset", "started_at"}
TABLE_KEYS = {"table", "estimated_rows", "total_bytes", "table_bytes", "index_bytes", "seq_scan",
              "idx_scan", "live_rows", "dead_rows", "last_vacuum", "last_autovacuum",
              "last_analyze", "last_autoanalyze"}


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Storage]:
    storage = await open_storage(pg_url, pool_size=3)
    try:
        yield storage
    finally:
        await storage.close()


async def sql(url: str, *statements: str, args: tuple[Any, ...] = ()) -> None:
    """Run statements on a connection of their own, then close it: closing a session
    flushes its statistics at once."""
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement, *args) if args else await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_sections_are_there_and_plausible(pg: Storage, pg_url: str, make_job) -> None:
    await pg.enqueue([make_job() for _ in range(100)])
    await sql(pg_url, "ANALYZE jobs")
    stats = await pg.performance_stats()
    assert set(stats) == {"server", "tables", "indexes", "statements", "latency_ms"}

    server = stats["server"]
    assert set(server) == SERVER_KEYS
    assert server["version"][:2].isdigit() and server["schema"] in pg_url
    assert server["database_bytes"] > 0
    assert 1 <= server["connections"] <= server["max_connections"]
    assert 0 < server["cache_hit_ratio"] <= 1
    assert server["commits"] > 0 and server["deadlocks"] >= 0 and server["temp_bytes"] >= 0

    tables = {t["table"]: t for t in stats["tables"]}
    assert set(tables) == set(TABLES)  # this schema's qstack tables, no other
    assert all(set(t) == TABLE_KEYS for t in tables.values())
    jobs = tables["jobs"]
    assert jobs["estimated_rows"] == 100 and jobs["last_analyze"] is not None
    # total: the table's every fork and its TOAST table, and its indexes
    assert jobs["total_bytes"] >= jobs["table_bytes"] + jobs["index_bytes"] > 0

    indexes = {i["index"]: i for i in stats["indexes"]}
    assert {"jobs_pkey", "idx_jobs_dispatch", "idx_worker_status_updated",
            "idx_assignment_worker_time", "idx_health_worker_time"} <= set(indexes)
    assert {i["table"] for i in indexes.values()} <= set(TABLES)
    assert all(i["size_bytes"] > 0 and i["scans"] >= 0 for i in indexes.values())

    latency = stats["latency_ms"]
    assert latency["samples"] == 20
    assert 0 < latency["min"] <= latency["median"] <= latency["max"] < 5000

    statements = stats["statements"]
    if statements["available"]:  # a server that preloads pg_stat_statements
        assert statements["rows"] and {"query", "calls", "mean_ms"} <= set(statements["rows"][0])
    else:
        assert statements["rows"] == [] and "pg_stat_statements" in statements["note"]


async def test_index_scans_count_the_queries_that_use_the_index(
    pg: Storage, pg_url: str, make_job
) -> None:
    ids = [e.id for e in await pg.enqueue([make_job() for _ in range(20)])]

    async def scans() -> tuple[int, int]:
        stats = await pg.performance_stats()
        index = next(i for i in stats["indexes"] if i["index"] == "jobs_pkey")
        table = next(t for t in stats["tables"] if t["table"] == "jobs")
        return index["scans"], table["idx_scan"] or 0

    before = await scans()
    await sql(pg_url, "SET enable_seqscan = off",
              *(f"SELECT * FROM jobs WHERE id = {i}" for i in ids[:5]))
    for _ in range(75):  # the statistics arrive asynchronously: up to 15 s
        if (after := await scans()) != before:
            break
        await asyncio.sleep(0.2)
    assert after[0] >= before[0] + 5 and after[1] >= before[1] + 5


async def test_an_installed_but_unloaded_pg_stat_statements_is_explained(pg_dsn: str) -> None:
    admin = await asyncpg.connect(pg_dsn)
    try:
        available = await admin.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
        if not available:
            pytest.skip("pg_stat_statements is not available on this server")
        name = "qstack_perf_" + secrets.token_hex(4)
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(pg_dsn, name)
    try:
        await sql(url, "CREATE EXTENSION pg_stat_statements")
        storage = await open_storage(url, pool_size=2)
        try:
            await storage.migrate()
            statements = (await storage.performance_stats())["statements"]
        finally:
            await storage.close()
        if statements["available"]:  # the server preloads it: then it is read
            assert isinstance(statements["rows"], list)
        else:
            assert statements["rows"] == []
            assert "installed but cannot be read" in statements["note"]
    finally:
        admin = await asyncpg.connect(pg_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
