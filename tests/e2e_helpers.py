"""Helpers for end-to-end tests: free ports, SQL checks, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from qshared.storage import dialect_of


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low(default: int = 32768) -> int:
    """The lowest port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_port_base(span: int = 30) -> int:
    """A base port whose next `span` ports are all free, below the kernel's range for
    outgoing connections: a port free now is not taken later by some client's socket
    (a stack's services bind theirs a moment after this check)."""
    top = max(_ephemeral_low() - span - 100, 12000)
    # pytest-xdist workers (gw0, gw1, ...) take every n-th range: two stacks started at the
    # same moment never pick the same one
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    bases = range(10000 + 100 * worker, top, 100 * workers)
    for _ in range(200):
        base = random.choice(bases)
        if all(_port_free(base + i) for i in range(1, span)):
            return base
    raise RuntimeError("no free port range found")


class Db:
    """Synchronous SQL against the stack's database (PostgreSQL or MySQL), for checking effects.

    Statements use $1, $2 ... placeholders on both (raw_sql fills them in on MySQL); a list
    goes in through `in_list`, and rows are planted with `now`, `ago`, `seconds_since` and
    `next_tokens` where the dialects spell them differently.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_of(url)

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        from raw_sql import raw_sql

        async def go() -> list[dict[str, Any]]:
            async with raw_sql(self.dialect, self.url) as conn:
                return await conn.fetch(sql, *args)

        return asyncio.run(go())

    def value(self, sql: str, *args: Any) -> Any:
        rows = self.fetch(sql, *args)
        return next(iter(rows[0].values())) if rows else None

    def in_list(self, column: str, param: int) -> str:
        """`column` is one of the list passed as $param (as raw_sql.RawSql.in_list)."""
        return f"{column} IN ${param}" if self.dialect == "mysql" else f"{column} = ANY(${param})"

    # The time expressions for planting rows; MySQL's NOW() would drop the fraction.
    @property
    def now(self) -> str:
        """The current time as an SQL expression, to the microsecond."""
        return "NOW(6)" if self.dialect == "mysql" else "now()"

    def ago(self, seconds: float) -> str:
        """The time `seconds` ago as an SQL expression (ahead of now when negative)."""
        if self.dialect == "mysql":
            return f"NOW(6) - INTERVAL {round(seconds * 1_000_000)} MICROSECOND"
        return f"now() - interval '{seconds} seconds'"

    def seconds_since(self, column: str) -> str:
        """The seconds from the time in `column` until now, as an SQL expression."""
        if self.dialect == "mysql":
            return f"TIMESTAMPDIFF(MICROSECOND, {column}, NOW(6)) / 1000000"
        return f"EXTRACT(EPOCH FROM now() - {column})"

    def next_tokens(self, n: int) -> list[int]:
        """`n` new fencing tokens, from the sequence the services take theirs from."""
        if self.dialect == "postgres":
            return [r["t"] for r in self.fetch(
                "SELECT nextval('qstack_fencing_seq') AS t FROM generate_series(1, $1)", n)]
        from raw_sql import raw_sql

        from qshared.storage.queries import load_queries

        async def go() -> int:  # LAST_INSERT_ID() is per connection: one for both
            async with raw_sql(self.dialect, self.url) as conn:
                await conn.execute(load_queries("mysql")["next_tokens"], {"n": n})
                return await conn.fetchval("SELECT LAST_INSERT_ID()")

        last = asyncio.run(go())
        return list(range(last - n + 1, last + 1))


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def interrupt(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Ctrl-C a process started with start_new_session=True; SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


QCTL = Path(sys.executable).with_name("qctl")


def stack_env(stack: Any, config_dir: Path) -> dict[str, str]:
    """An environment that points qctl at `stack` (an empty config dir: no context in the
    way) and at its database."""
    env = dict(os.environ)
    env.update(QSTACK_SCHEDULER_URL=stack.scheduler_url, QSTACK_REGISTRY_URL=stack.registry_url,
               QSTACK_FAILOVER_URL=stack.services["failover"].url, QSTACK_TOKEN=stack.token,
               DATABASE_URL=stack.database_url, QSTACK_CONFIG_DIR=str(config_dir),
               COLUMNS="250")
    return env


def qctl_runner(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run(*args, code=0, timeout=120) -> the finished `qctl args...`, which must have exited
    with `code` (any code when it is None)."""

    def run(*args: str, code: int | None = 0,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(QCTL), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert code is None or done.returncode == code, (
            f"qctl {' '.join(args)} exited {done.returncode}, not {code}:\n"
            f"{done.stdout}{done.stderr}")
        return done

    return run


def spawn_worker(env: dict[str, str], port: int, queues: str, concurrency: int,
                 log_path: Path) -> subprocess.Popen:
    """`qctl worker:start` as its own process on `port`, its output in `log_path`."""
    worker_env = {**env, "QSTACK_PORT": str(port), "QSTACK_HOST": "127.0.0.1",
                  "QSTACK_ADVERTISE_URL": f"http://127.0.0.1:{port}"}
    with log_path.open("w") as log:
        return subprocess.Popen(
            [str(QCTL), "worker:start", "--queues", queues, "--concurrency", str(concurrency),
             "--port", str(port)], env=worker_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own group: interrupt() may SIGKILL all of it


def run_sql(dsn: str, *statements: str) -> None:
    """Run statements on a connection of their own (from sync test code)."""

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())


@contextlib.contextmanager
def empty_schema(dsn: str) -> Iterator[str]:
    """A new, empty PostgreSQL schema: yields a DSN whose search_path is it; dropped after."""
    from backends import place_name, with_query

    schema = place_name()
    run_sql(dsn, f'CREATE SCHEMA "{schema}"')
    try:
        yield with_query(dsn, search_path=schema)
    finally:
        run_sql(dsn, "SET lock_timeout = '20s'", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
