"""MySQL's performance statistics for `qctl db performance-stats`: server, tables, indexes,
the slowest statements (performance_schema) and the round-trip latency, under the keys the
PostgreSQL version uses (None where MySQL keeps no such figure: vacuum, dead rows)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

import aiomysql
import pymysql

from qshared.storage.base import TABLES
from qshared.storage.mysql_scripts import render

LATENCY_SAMPLES = 20
SLOWEST = 10


async def _rows(conn: aiomysql.Connection, sql: str, args: Any = None) -> list[dict[str, Any]]:
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(render(cur, sql, args or {}))
        return list(await cur.fetchall())


async def _optional(conn: aiomysql.Connection, sql: str, args: Any = None
                    ) -> list[dict[str, Any]] | None:
    """Rows of a statistics view this user may not read (mysql.*, performance_schema)."""
    try:
        return await _rows(conn, sql, args)
    except pymysql.err.MySQLError as exc:
        if exc.args and exc.args[0] in (2006, 2013):  # the connection, not the privilege
            raise
        return None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


async def performance_stats(conn: aiomysql.Connection, q: Mapping[str, str]) -> dict[str, Any]:
    """Storage.performance_stats on one pooled connection."""
    tables_arg = {"tables": list(TABLES)}
    [server] = await _rows(conn, q["perf_server"])
    status = {r["Variable_name"].lower(): r["Value"] for r in await _rows(conn, q["perf_status"])}
    [now] = await _rows(conn, q["backup_now"])
    reads = _int(status.get("innodb_buffer_pool_read_requests"))
    misses = _int(status.get("innodb_buffer_pool_reads"))
    uptime = _int(status.get("uptime"))
    server_out = {
        "version": server["version"].split("-")[0], "version_full": server["version"],
        "database": server["database"], "schema": server["database"],
        "database_bytes": _int(server["database_bytes"]),
        "connections": server["connections"], "max_connections": server["max_connections"],
        "database_connections": server["database_connections"],
        "cache_hit_ratio": (1 - misses / reads) if reads and misses is not None else None,
        "commits": _int(status.get("handler_commit")),
        "rollbacks": _int(status.get("handler_rollback")),
        "deadlocks": _int(status.get("innodb_deadlocks")),  # MariaDB; MySQL 8: INNODB_METRICS
        "temp_files": _int(status.get("created_tmp_files")),
        "temp_bytes": None, "stats_reset": None,
        "started_at": (now["now"] - timedelta(seconds=uptime)).replace(tzinfo=UTC)
        if uptime is not None else None,
    }
    p_s = bool((await _rows(conn, q["perf_schema_enabled"]))[0]["enabled"])
    usage = {r["table"]: r for r in (await _optional(conn, q["perf_table_usage"], tables_arg)
                                     if p_s else None) or []}
    analyzed = {r["table"]: r["analyzed_at"].replace(tzinfo=UTC)  # the session is in UTC
                for r in await _optional(conn, q["perf_table_analyzed"], tables_arg) or []
                if r["analyzed_at"] is not None}
    tables = []
    for r in await _rows(conn, q["perf_tables"], tables_arg):
        used = usage.get(r["table"], {})
        tables.append({
            "table": r["table"], "estimated_rows": _int(r["estimated_rows"]),
            "total_bytes": _int(r["total_bytes"]), "table_bytes": _int(r["table_bytes"]),
            "index_bytes": _int(r["index_bytes"]),
            "seq_scan": _int(used.get("seq_scan")), "idx_scan": _int(used.get("idx_scan")),
            "live_rows": _int(r["estimated_rows"]), "dead_rows": None,
            "last_vacuum": None, "last_autovacuum": None,
            "last_analyze": None, "last_autoanalyze": analyzed.get(r["table"]),
        })
    index_use = {(r["table"], r["index"]): r
                 for r in (await _optional(conn, q["perf_index_usage"], tables_arg)
                           if p_s else None) or []}
    sizes = {(r["table"], r["index"]): r["size_bytes"]
             for r in await _optional(conn, q["perf_index_sizes"], tables_arg) or []}
    indexes = []
    for r in await _rows(conn, q["perf_indexes"], tables_arg):
        used = index_use.get((r["table"], r["index"]), {})
        indexes.append({"table": r["table"], "index": r["index"],
                        "scans": _int(used.get("scans")),
                        "tuples_read": _int(used.get("tuples_read")),
                        "size_bytes": _int(sizes.get((r["table"], r["index"])))})
    statements = await _statements(conn, q, p_s)
    samples = []
    for _ in range(LATENCY_SAMPLES):
        started = time.perf_counter()
        await _rows(conn, q["perf_ping"])
        samples.append((time.perf_counter() - started) * 1000)
    latency = {"samples": len(samples), "median": statistics.median(samples),
               "min": min(samples), "max": max(samples)}
    return {"server": server_out, "tables": tables, "indexes": indexes,
            "statements": statements, "latency_ms": latency}


async def _statements(conn: aiomysql.Connection, q: Mapping[str, str], p_s: bool
                      ) -> dict[str, Any]:
    """The slowest statement digests by mean time, or why there are none."""
    if not p_s:
        return {"available": False, "rows": [],
                "note": "performance_schema is off on this server (performance_schema = ON "
                        "in my.cnf, then restart; MySQL 8 has it on by default)"}
    rows = await _optional(conn, q["perf_statements"], {"limit": SLOWEST})
    if rows is None:
        return {"available": False, "rows": [],
                "note": "performance_schema.events_statements_summary_by_digest cannot be "
                        "read by this user (GRANT SELECT ON performance_schema.*)"}
    return {"available": True, "rows": [
        {k: (float(v) if k.endswith("_ms") and v is not None else v) for k, v in r.items()}
        for r in rows], "note": None}
