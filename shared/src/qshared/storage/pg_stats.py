"""PostgreSQL's performance statistics for `qctl db performance-stats`: server, tables,
indexes, the slowest statements (pg_stat_statements) and the round-trip latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from qshared.storage.base import TABLES

LATENCY_SAMPLES = 20
SLOWEST = 10


async def performance_stats(pool: asyncpg.Pool, q: Mapping[str, str]) -> dict[str, Any]:
    """Storage.performance_stats over one pooled connection."""
    async with pool.acquire() as conn:
        server = dict(await conn.fetchrow(q["perf_server"]))
        tables = [dict(r) for r in await conn.fetch(q["perf_tables"], list(TABLES))]
        indexes = [dict(r) for r in await conn.fetch(q["perf_indexes"], list(TABLES))]
        statements = await _statements(conn, q)
        latency = await _latency(conn, q)
    return {"server": server, "tables": tables, "indexes": indexes, "statements": statements,
            "latency_ms": latency}


async def _statements(conn: asyncpg.Connection, q: Mapping[str, str]) -> dict[str, Any]:
    """The slowest statements by mean time, or why there are none."""
    schema = await conn.fetchval(q["perf_statements_schema"])
    if schema is None:
        return {"available": False, "rows": [],
                "note": "pg_stat_statements is not installed in this database "
                        "(shared_preload_libraries = 'pg_stat_statements', then "
                        "CREATE EXTENSION pg_stat_statements)"}
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(q["perf_use_schema"], schema)  # finds the extension's view
            rows = [dict(r) for r in await conn.fetch(q["perf_statements"], SLOWEST)]
    except asyncpg.PostgresError as exc:  # installed but not loaded, or no privilege
        return {"available": False, "rows": [],
                "note": f"pg_stat_statements is installed but cannot be read: {exc}"}
    return {"available": True, "rows": rows, "note": None}


async def _latency(conn: asyncpg.Connection, q: Mapping[str, str]) -> dict[str, Any]:
    """Round trips of a trivial query, in ms."""
    samples = []
    for _ in range(LATENCY_SAMPLES):
        started = time.perf_counter()
        await conn.fetchval(q["perf_ping"])
        samples.append((time.perf_counter() - started) * 1000)
    return {"samples": len(samples), "median": statistics.median(samples),
            "min": min(samples), "max": max(samples)}
