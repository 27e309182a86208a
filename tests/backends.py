"""Where the tests' backends come from: an env DSN, testcontainers, or the embedded PostgreSQL.

The rule (DESIGN.md, Tests): a backend's DSN comes from its QSTACK_TEST_* variable when set;
else from a testcontainers container when a Docker engine answers; else PostgreSQL comes from
the `pgserver` wheel and MySQL/Redis are skipped with the reason, unless
QSTACK_REQUIRE_BACKENDS names them, in which case the test fails saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import importlib.util
import os
import re
import secrets
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

BACKENDS = ("postgres", "mysql", "redis")
DSN_ENV = {
    "postgres": "QSTACK_TEST_PG_DSN",
    "mysql": "QSTACK_TEST_MYSQL_DSN",
    "redis": "QSTACK_TEST_REDIS_URL",
}
REQUIRE_ENV = "QSTACK_REQUIRE_BACKENDS"
IMAGES = {"postgres": "postgres:16-alpine", "mysql": "mysql:8.4", "redis": "redis:7-alpine"}
# The oldest server versions DESIGN.md supports.
MIN_VERSIONS = {"postgres": (13,), "mysql": (8, 0), "mariadb": (10, 6), "redis": (7,)}
PROBE_TIMEOUT = 5.0


def required_backends() -> frozenset[str]:
    """The backends QSTACK_REQUIRE_BACKENDS names (a typo is a usage error, not a skip)."""
    names = {n.strip().lower() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()}
    unknown = names - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(
            f"{REQUIRE_ENV} names unknown backends {sorted(unknown)}; known: {', '.join(BACKENDS)}"
        )
    return frozenset(names)


def storage_backends() -> list[str]:
    """Backends that implement the storage contract; the contract suite runs on each."""
    names = ["postgres"]
    if importlib.util.find_spec("qshared.storage.mysql") is not None:
        names.append("mysql")
    return names


# -- URLs -------------------------------------------------------------------------------
def redact(url: str) -> str:
    """The URL with its password hidden, fit for a log line."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def with_query(url: str, **params: str) -> str:
    """Append query parameters, keeping the ones there (pgserver's URL has ?host=...)."""
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + extra


def with_database(url: str, database: str) -> str:
    """The same server URL naming another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def mysql_params(url: str) -> dict[str, Any]:
    """aiomysql.connect() keywords for a mysql://user:pass@host:port/db URL."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/") or None,
    }


# -- probes -----------------------------------------------------------------------------
async def probe(name: str, url: str) -> str:
    """Open a real connection to the backend and return its server version.

    Raises:
        Exception: whatever the driver raises when the server does not answer.
    """
    if name == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    if name == "mysql":
        import aiomysql

        conn = await asyncio.wait_for(
            aiomysql.connect(**mysql_params(url), connect_timeout=PROBE_TIMEOUT), PROBE_TIMEOUT
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1, VERSION()")
                one, version = await cur.fetchone()
            assert one == 1
            return version
        finally:
            conn.close()
    if name == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
        try:
            assert await client.ping() is True
            return (await client.info("server"))["redis_version"]
        finally:
            await client.aclose()
    raise ValueError(f"unknown backend {name!r}")


def version_supported(name: str, version: str) -> bool:
    """Whether a server version string meets DESIGN.md's minimum for the backend."""
    kind = "mariadb" if name == "mysql" and "mariadb" in version.lower() else name
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    return numbers >= MIN_VERSIONS[kind]


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def docker_problem() -> str | None:
    """None when a Docker engine answers a ping, else why testcontainers cannot be used."""
    try:
        import docker
    except ImportError:
        return "testcontainers/docker is not installed"
    try:
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return f"no Docker engine answers ({first})"
    return None


# -- the session's registry -----------------------------------------------------------------
@dataclass(slots=True)
class Backend:
    """One resolved backend: its server URL, where it came from, and why not, if it is not."""

    name: str
    url: str | None
    source: str
    version: str | None = None
    problem: str | None = None

    @property
    def available(self) -> bool:
        return self.problem is None and self.url is not None


class BackendRegistry:
    """Resolves each backend once per session, lazily, and gives back what it started."""

    def __init__(self, tmp_dir: Callable[[str], Path]) -> None:
        self.required = required_backends()
        self._tmp_dir = tmp_dir
        self._found: dict[str, Backend] = {}
        self._stack = contextlib.ExitStack()
        self._docker: tuple[str | None] | None = None

    @property
    def resolved(self) -> dict[str, Backend]:
        return dict(self._found)

    def get(self, name: str) -> Backend:
        if name not in self._found:
            self._found[name] = self._resolve(name)
        return self._found[name]

    def require(self, name: str) -> str:
        """The backend's server URL; otherwise skip the test, or fail it when it is required."""
        backend = self.get(name)
        if backend.available:
            assert backend.url is not None
            return backend.url
        self.unavailable(name, backend.problem or "unknown reason")
        raise AssertionError("unreachable")

    def unavailable(self, name: str, problem: str) -> None:
        """Skip, or fail when QSTACK_REQUIRE_BACKENDS names the backend."""
        if name in self.required:
            pytest.fail(
                f"{REQUIRE_ENV} requires the {name} backend, but it is unavailable: {problem}",
                pytrace=False,
            )
        pytest.skip(f"{name} backend unavailable: {problem}")

    def close(self) -> None:
        self._stack.close()

    def summary(self) -> list[str]:
        lines = []
        for name in BACKENDS:
            backend = self._found.get(name)
            tag = " [required]" if name in self.required else ""
            if backend is None:
                lines.append(f"{name}{tag}: not used by the selected tests")
            elif backend.available:
                assert backend.url is not None
                lines.append(
                    f"{name}{tag}: {backend.version} from {backend.source} ({redact(backend.url)})"
                )
            else:
                verdict = "FAILED (required)" if name in self.required else "skipped"
                lines.append(f"{name}{tag}: {verdict}: {backend.problem}")
        return lines

    # -- resolution ----------------------------------------------------------------------
    def _docker_problem(self) -> str | None:
        if self._docker is None:
            self._docker = (docker_problem(),)
        return self._docker[0]

    def _resolve(self, name: str) -> Backend:
        env = DSN_ENV[name]
        if url := os.environ.get(env):
            return self._checked(Backend(name, url, f"${env}"))
        no_docker = self._docker_problem()
        if no_docker is None:
            try:
                return self._checked(self._start_container(name))
            except Exception as exc:
                no_docker = f"testcontainers failed: {type(exc).__name__}: {exc}"
        if name == "postgres":
            try:
                return self._checked(self._start_pgserver())
            except Exception as exc:
                return Backend(
                    name, None, "pgserver",
                    problem=f"{env} is not set, {no_docker}, and pgserver failed: {exc}",
                )
        return Backend(name, None, "nowhere", problem=f"{env} is not set and {no_docker}")

    def _checked(self, backend: Backend) -> Backend:
        assert backend.url is not None
        try:
            backend.version = run_sync(probe(backend.name, backend.url))
        except Exception as exc:
            backend.problem = (
                f"{backend.source} ({redact(backend.url)}) does not answer: "
                f"{type(exc).__name__}: {exc}"
            )
        return backend

    def _start_container(self, name: str) -> Backend:
        # Cannot run on a machine without a Docker engine; kept minimal on purpose.
        def container_class(module: str, cls: str) -> Any:
            try:
                return getattr(importlib.import_module(f"testcontainers.community.{module}"), cls)
            except ImportError:
                return getattr(importlib.import_module(f"testcontainers.{module}"), cls)

        image = IMAGES[name]
        if name == "postgres":
            pg = self._stack.enter_context(
                container_class("postgres", "PostgresContainer")(image, driver=None)
            )
            url = pg.get_connection_url(driver=None)
        elif name == "mysql":
            # root, so that tests may create and drop their own databases
            my = self._stack.enter_context(
                container_class("mysql", "MySqlContainer")(
                    image, username="root", password="test", dbname="test"
                )
            )
            url = my.get_connection_url()
        else:
            rd = self._stack.enter_context(container_class("redis", "RedisContainer")(image))
            url = f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
        return Backend(name, url, f"testcontainers {image}")

    def _start_pgserver(self) -> Backend:
        with warnings.catch_warnings():
            # platformdirs warns about an unset XDG_RUNTIME_DIR (CI, root shells); harmless
            warnings.simplefilter("ignore")
            import pgserver

            data = self._tmp_dir("pgserver") / "data"
            server = pgserver.get_server(data, cleanup_mode="delete")
        self._stack.callback(server.cleanup)
        return Backend("postgres", server.get_uri(), f"embedded pgserver in {data}")


# -- per-test places --------------------------------------------------------------------
def place_name() -> str:
    """A fresh schema/database name for one test."""
    return "t_" + secrets.token_hex(6)


async def _migrate(url: str) -> None:
    from qshared.storage import open_storage

    storage = await open_storage(url, pool_size=2)
    try:
        await storage.migrate()
    finally:
        await storage.close()


@contextlib.asynccontextmanager
async def pg_schema(server_url: str, *, migrate: bool) -> AsyncIterator[str]:
    """A schema of its own for one test: yields a DSN whose search_path is that schema.

    asyncpg passes unknown DSN query parameters to the server as settings, so every
    connection of a pool opened on the DSN works in the schema.
    """
    import asyncpg

    schema = place_name()
    admin = await asyncpg.connect(server_url, timeout=PROBE_TIMEOUT)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await admin.close()
    try:
        url = with_query(server_url, search_path=schema)
        if migrate:
            await _migrate(url)
        yield url
    finally:
        admin = await asyncpg.connect(server_url, timeout=PROBE_TIMEOUT)
        try:
            # a connection left in a transaction must not hang the run forever
            await admin.execute("SET lock_timeout = '20s'")
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def mysql_database(server_url: str, *, migrate: bool) -> AsyncIterator[str]:
    """A database of its own for one test (MySQL schemas are databases): yields its DSN."""
    import aiomysql

    name = place_name()

    async def execute(sql: str) -> None:
        params = {**mysql_params(server_url), "db": None}
        conn = await aiomysql.connect(**params, connect_timeout=PROBE_TIMEOUT, autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
        finally:
            conn.close()

    await execute(f"CREATE DATABASE `{name}`")
    try:
        url = with_database(server_url, name)
        if migrate:
            await _migrate(url)
        yield url
    finally:
        await execute(f"DROP DATABASE IF EXISTS `{name}`")


# -- catalog ----------------------------------------------------------------------------
async def catalog(dialect: str, url: str) -> tuple[set[str], dict[str, tuple[str, list[str]]]]:
    """The tables of the test's schema, and its indexes as {name: (table, columns)}."""
    if dialect == "postgres":
        import asyncpg

        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT)
        try:
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
            }
            rows = await conn.fetch(
                """
                SELECT i.relname AS index, t.relname AS tbl,
                       array_agg(a.attname ORDER BY k.ord) AS cols
                FROM pg_index x
                JOIN pg_class i ON i.oid = x.indexrelid
                JOIN pg_class t ON t.oid = x.indrelid
                JOIN pg_namespace n ON n.oid = t.relnamespace
                CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                WHERE n.nspname = current_schema()
                GROUP BY i.relname, t.relname
                """
            )
        finally:
            await conn.close()
        return tables, {r["index"]: (r["tbl"], list(r["cols"])) for r in rows}
    if dialect == "mysql":
        import aiomysql

        conn = await aiomysql.connect(**mysql_params(url), connect_timeout=PROBE_TIMEOUT)
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = DATABASE()"
                )
                tables = {r[0] for r in await cur.fetchall()}
                await cur.execute(
                    "SELECT index_name, table_name, column_name FROM information_schema.statistics"
                    " WHERE table_schema = DATABASE() ORDER BY index_name, seq_in_index"
                )
                indexes: dict[str, tuple[str, list[str]]] = {}
                for index, table, column in await cur.fetchall():
                    indexes.setdefault(index, (table, []))[1].append(column)
        finally:
            conn.close()
        # The dialect's own bookkeeping tables (the fencing counter and the notifications,
        # which PostgreSQL keeps as a sequence and in LISTEN/NOTIFY, not in tables) are not
        # part of the data model the schema tests and TABLES describe.
        from qshared.storage.mysql import INTERNAL_TABLES

        return tables - set(INTERNAL_TABLES), indexes
    raise ValueError(f"no catalog query for {dialect!r}")
