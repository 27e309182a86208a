"""Stack fixtures for e2e and chaos tests: real service processes on a schema of their own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import pg_schema
from e2e_helpers import Db, free_port_base

from qctl.stack import Stack


@pytest.fixture(scope="module")
def e2e_db_url(pg_dsn: str) -> Iterator[str]:
    """A migrated schema of its own for one test module."""
    # The async context manager is entered and left inside one coroutine that waits on a
    # thread event: asyncio.run() would finalize a suspended generator (dropping the schema)
    # as soon as it returned.
    import threading

    ready: list[str] = []
    release = threading.Event()
    entered = threading.Event()

    async def hold() -> None:
        async with pg_schema(pg_dsn, migrate=True) as url:
            ready.append(url)
            entered.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait)

    holder = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    holder.start()
    entered.wait(60)
    if not ready:
        pytest.fail("could not create the e2e schema")
    try:
        yield ready[0]
    finally:
        release.set()
        holder.join(60)


@pytest.fixture(scope="module")
def start_stack(
    e2e_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """start_stack(**Stack options) -> a started Stack on the module's schema; stopped after.

    Starting another stops the one before (they would share the schema).
    """
    stacks: list[Stack] = []

    def start(**options: Any) -> Stack:
        # One stack at a time per module schema: two would share (and fight over) its rows.
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
