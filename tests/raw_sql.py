"""Raw SQL on a test's own schema or database, for either backend: the tests plant and
inspect rows with it (`raw_sql(dialect, url)`), written once with `$1` placeholders, and
count what a statement read (`rows_read`)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from backends import PROBE_TIMEOUT, mysql_params


# -- raw SQL on a test's place ------------------------------------------------------------
class RawSql:
    """A raw connection on one test's schema or database, to plant rows and look at tables.

    Statements use PostgreSQL's positional placeholders ($1, $2, ...) on every dialect and
    rows come back as dicts. The dialect differences the tests meet have helpers (`now`,
    `in_list`, `age`); a statement that differs more is written per `dialect` by the test.
    """

    dialect: str
    now: str  # the current time, to the microsecond, as an SQL expression

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row (None without rows)."""
        rows = await self.fetch(sql, *args)
        return next(iter(rows[0].values())) if rows else None

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Committed at the end, rolled back on an error."""
        raise NotImplementedError

    def in_list(self, column: str, param: int) -> str:
        """`column` is one of the list passed as $param."""
        raise NotImplementedError

    def ago(self, param: int) -> str:
        """The time the float number of seconds passed as $param ago."""
        raise NotImplementedError

    async def age(self, table: str, column: str, ids: Sequence[int], seconds: float) -> None:
        """Move `column` of the rows `ids` of `table` `seconds` into the past."""
        await self.execute(
            f"UPDATE {table} SET {column} = {self.ago(2)} WHERE {self.in_list('id', 1)}",
            list(ids), float(seconds))


class _PgSql(RawSql):
    dialect = "postgres"
    now = "now()"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._conn.transaction()

    def in_list(self, column: str, param: int) -> str:
        return f"{column} = ANY(${param})"

    def ago(self, param: int) -> str:
        return f"now() - make_interval(secs => ${param})"


class _MysqlSql(RawSql):
    """The $n placeholders are filled in here, escaped by the driver (a list becomes a
    parenthesized one, `(NULL)` when empty); one mapping as the only argument fills the
    %(name)s placeholders of the named queries in mysql.sql instead."""

    dialect = "mysql"
    now = "NOW(6)"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _render(self, cur: Any, sql: str, args: tuple[Any, ...]) -> str:
        if len(args) == 1 and isinstance(args[0], Mapping):
            from qshared.storage.mysql_scripts import render

            return render(cur, sql, args[0])

        def literal(match: re.Match[str]) -> str:
            value = args[int(match.group(1)) - 1]
            if isinstance(value, list | tuple):
                return "(" + (", ".join(self._conn.escape(v) for v in value) or "NULL") + ")"
            return self._conn.escape(value)

        return re.sub(r"\$(\d+)", literal, sql)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        import aiomysql

        async with self._conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute(self._render(cur, sql, args))
            return list(await cur.fetchall())

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self._conn.begin()
        try:
            yield
        except BaseException:
            await self._conn.rollback()
            raise
        await self._conn.commit()

    def in_list(self, column: str, param: int) -> str:
        return f"{column} IN ${param}"

    def ago(self, param: int) -> str:
        return f"NOW(6) - INTERVAL ROUND(${param} * 1000000) MICROSECOND"


@contextlib.asynccontextmanager
async def raw_sql(dialect: str, url: str) -> AsyncIterator[RawSql]:
    """A RawSql on the per-test URL of a storage backend; closed afterwards."""
    if dialect == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT)
        try:
            yield _PgSql(conn)
        finally:
            await conn.close()
    elif dialect == "mysql":
        import aiomysql

        conn = await aiomysql.connect(**mysql_params(url), charset="utf8mb4", autocommit=True,
                                      connect_timeout=PROBE_TIMEOUT)
        try:
            # the storage's session: UTC for its DATETIME columns, and READ COMMITTED, so
            # that a transaction here locks as a dispatch pass does (no gap locks)
            async with conn.cursor() as cur:
                await cur.execute("SET time_zone = '+00:00'")
                await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            yield _MysqlSql(conn)
        finally:
            conn.close()
    else:
        raise ValueError(f"no raw SQL connection for {dialect!r}")


# -- what a statement read ------------------------------------------------------------------
async def rows_read(raw: RawSql, sql: str, *args: Any) -> tuple[int, str]:
    """What the statement read, and (PostgreSQL) its plan. PostgreSQL: its scan nodes' rows,
    returned or removed by a filter, times their loops. MySQL: this session's handler
    counters, with the index entries an index condition turned down (MariaDB's
    Handler_icp_attempts; MySQL 8 does not count those)."""
    if raw.dialect == "postgres":
        [row] = await raw.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
        plan = json.loads(row["QUERY PLAN"])[0]["Plan"]

        def read(node: dict[str, Any]) -> int:
            own = 0
            if "Scan" in node["Node Type"]:
                own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) \
                    * node["Actual Loops"]
            return own + sum(read(child) for child in node.get("Plans", ()))

        return read(plan), json.dumps(plan)

    async def counted() -> int:
        rows = await raw.fetch("SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_next',"
                               " 'Handler_read_prev', 'Handler_read_rnd_next', 'Handler_icp_attempts')")
        return sum(int(r["Value"]) for r in rows)

    first = await counted()
    second = await counted()  # what a SHOW STATUS reads itself
    await raw.fetch(sql, *args)
    return await counted() - second - (second - first), ""
