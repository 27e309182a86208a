"""Stack fixtures for e2e and chaos tests: real service processes on a database of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import mysql_database, pg_schema, storage_backends
from e2e_helpers import Db, free_port_base

from qctl.stack import Stack

# The databases a module's stacks may run on; a test opts into all of them with
# `@on_each_database` (ids `[postgres]`, `[mysql]`), else its module runs on PostgreSQL.
E2E_BACKENDS = tuple(storage_backends())
on_each_database = pytest.mark.parametrize("e2e_backend", E2E_BACKENDS, indirect=True)


@pytest.fixture(scope="module")
def e2e_backend(request: pytest.FixtureRequest) -> str:
    """The storage backend of the module's stacks: 'postgres' unless parametrized."""
    return getattr(request, "param", "postgres")


@contextlib.contextmanager
def held_place(backend: str, server_dsn: str, *, migrate: bool) -> Iterator[str]:
    """A schema (PostgreSQL) or database (MySQL) of its own, from sync code: yields its URL.

    The async context manager is entered and left inside one coroutine that waits on a
    thread event: asyncio.run() would finalize a suspended generator (dropping the place)
    as soon as it returned.
    """
    place = {"postgres": pg_schema, "mysql": mysql_database}[backend]
    ready: list[str] = []
    failed: list[BaseException] = []
    release = threading.Event()
    entered = threading.Event()

    async def hold() -> None:
        try:
            async with place(server_dsn, migrate=migrate) as url:
                ready.append(url)
                entered.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
        except BaseException as exc:
            failed.append(exc)
            entered.set()
            if ready:
                raise  # the drop failed: the thread reports it

    holder = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    holder.start()
    entered.wait(60)
    if not ready:
        release.set()
        pytest.fail(f"could not create the e2e {backend} place: {failed[0] if failed else 'timeout'}")
    try:
        yield ready[0]
    finally:
        release.set()
        holder.join(60)


@pytest.fixture(scope="module")
def e2e_server_dsn(e2e_backend: str, request: pytest.FixtureRequest) -> str:
    """The server-level DSN of the module's backend (skips or fails as its fixture does)."""
    return request.getfixturevalue({"postgres": "pg_dsn", "mysql": "mysql_dsn"}[e2e_backend])


@pytest.fixture(scope="module")
def e2e_db_url(e2e_backend: str, e2e_server_dsn: str) -> Iterator[str]:
    """A migrated schema (PostgreSQL) or database (MySQL) of its own for one test module."""
    with held_place(e2e_backend, e2e_server_dsn, migrate=True) as url:
        yield url


@pytest.fixture(scope="module")
def start_stack(
    e2e_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """start_stack(**Stack options) -> a started Stack on the module's database; stopped after.

    Starting another stops the one before (they would share the database).
    """
    stacks: list[Stack] = []

    def start(**options: Any) -> Stack:
        # One stack at a time per module database: two would share (and fight over) its rows.
        for earlier in stacks:
            earlier.stop(grace=15)
        options.setdefault("workers", 3)
        options.setdefault("concurrency", 4)
        options.setdefault("queues", ("default", "emails"))
        options.setdefault("log_level", "info")
        options.setdefault("failover", True)
        stack = Stack(
            database_url=options.pop("database_url", e2e_db_url), port_base=free_port_base(),
            state_dir=Path(tmp_path_factory.mktemp("stack")), **options,
        )
        stacks.append(stack)
        try:
            stack.start()
        except Exception:
            for name in stack.services:
                with contextlib.suppress(Exception):
                    print(f"--- {name}\n{stack.services[name].log_tail(40)}")
            raise
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            stack.stop(grace=15)


@pytest.fixture(scope="module")
def db(e2e_db_url: str) -> Db:
    return Db(e2e_db_url)


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    """An httpx client of the module's `stack` fixture's scheduler, with its token."""
    with httpx.Client(
        base_url=stack.scheduler_url, headers={"Authorization": f"Bearer {stack.token}"},
        timeout=30,
    ) as c:
        yield c
