"""Every backend answers a real connection; a required one that does not fails the run."""

from __future__ import annotations

import asyncpg
import pytest
from backends import (
    BACKENDS,
    BackendRegistry,
    mysql_database,
    mysql_params,
    pg_schema,
    probe,
    redact,
    version_supported,
)


@pytest.mark.parametrize("name", BACKENDS)
async def test_backend_answers(name: str, backend_registry: BackendRegistry) -> None:
    """postgres: asyncpg; mysql: aiomysql SELECT 1; redis: PING. Skip, or fail when required."""
    url = backend_registry.require(name)
    try:
        version = await probe(name, url)
    except Exception as exc:
        backend_registry.unavailable(name, f"{redact(url)} does not answer: {exc!r}")
    assert version_supported(name, version), f"{name} {version} is older than DESIGN.md allows"


async def test_pg_schema_is_isolated_and_dropped(pg_dsn: str) -> None:
    async with pg_schema(pg_dsn, migrate=False) as url:
        schema = url.rsplit("search_path=", 1)[1]
        conn = await asyncpg.connect(url)
        try:
            # the DSN's query parameter reached the server as a setting
            assert await conn.fetchval("SELECT current_schema()") == schema
            await conn.execute("CREATE TABLE probe (x int)")
            assert await conn.fetchval("SELECT to_regclass($1)::text", f"{schema}.probe")
        finally:
            await conn.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        gone = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema
        )
    finally:
        await conn.close()
    assert gone == 0


async def test_pg_schema_is_dropped_when_the_test_fails(pg_dsn: str) -> None:
    with pytest.raises(RuntimeError):
        async with pg_schema(pg_dsn, migrate=True) as url:
            schema = url.rsplit("search_path=", 1)[1]
            raise RuntimeError("the test failed")
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema
        ) == 0
    finally:
        await conn.close()


async def test_mysql_database_is_isolated_and_dropped(mysql_dsn: str) -> None:
    import aiomysql

    async with mysql_database(mysql_dsn, migrate=False) as url:
        name = mysql_params(url)["db"]
        conn = await aiomysql.connect(**mysql_params(url))
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT DATABASE()")
                assert (await cur.fetchone())[0] == name
        finally:
            conn.close()
    conn = await aiomysql.connect(**{**mysql_params(mysql_dsn), "db": None})
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (name,)
            )
            assert (await cur.fetchone())[0] == 0
    finally:
        conn.close()
