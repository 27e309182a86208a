"""What the benchmark scripts share: a private schema, SQL, percentiles, the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from qshared.storage import dialect_of


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of the values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def is_mysql(url: str | None) -> bool:
    return bool(url) and dialect_of(url) == "mysql"


async def sql(url: str, query: str, *args: Any) -> list[Any]:
    """One statement on a connection of its own (PostgreSQL: $1 placeholders; MySQL: %s).

    Rows are mappings; MySQL's time stamps come back naive (UTC): see `aware`.
    """
    if not is_mysql(url):
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()
    import aiomysql

    from qshared.storage.mysql_sessions import MysqlParams

    # the storage's own connection keywords, without its session set-up (which depends on
    # knowing MySQL from MariaDB), as its probe connects
    params = {**MysqlParams.from_url(url).connect_kwargs(), "init_command": None}
    conn = await aiomysql.connect(**params, cursorclass=aiomysql.DictCursor)
    try:
        async with conn.cursor() as cur:
            await cur.execute(query, args or None)
            return list(await cur.fetchall())
    finally:
        conn.close()


def aware(value: datetime) -> datetime:
    """A time stamp as an aware UTC datetime (MySQL's come back naive, in UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@contextlib.contextmanager
def private_schema(db: str | None) -> Iterator[str | None]:
    """A schema (PostgreSQL) or database (MySQL) of the benchmark's own on `db`, dropped
    after, as a URL; None stays None (the stack then starts its embedded PostgreSQL)."""
    if not db:
        yield None
        return
    name = "bench_" + secrets.token_hex(4)
    if is_mysql(db):
        asyncio.run(sql(db, f"CREATE DATABASE `{name}`"))
        try:
            yield urlunsplit(urlsplit(db)._replace(path=f"/{name}"))
        finally:
            asyncio.run(sql(db, f"DROP DATABASE `{name}`"))
        return
    asyncio.run(sql(db, f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{db}{'&' if '?' in db else '?'}search_path={name}"
    finally:
        asyncio.run(sql(db, f'DROP SCHEMA "{name}" CASCADE'))


def database_label(db: str | None) -> str:
    if not db:
        return "postgresql (embedded pgserver)"
    return "mysql/mariadb (external)" if is_mysql(db) else "postgresql (external)"


def report(result: dict[str, Any], out: str, db: str | None, hide: tuple[str, ...] = ()) -> None:
    """Add where it ran, write the JSON to `out` and print the figures as a table."""
    result.update({
        "database": database_label(db),
        "cores": os.cpu_count(), "at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    shown = {k: v for k, v in result.items() if k not in hide}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key:<{width}}  {value}")
