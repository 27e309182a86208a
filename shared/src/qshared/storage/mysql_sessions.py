"""MySQL sessions: how a connection is opened, and the sessions of their own that wake-ups
(polled notifications) and the worker liveness lock (GET_LOCK) live on."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiomysql

from qshared.errors import ConfigError, StorageError
from qshared.storage.base import Callback, Subscription
from qshared.storage.mysql_scripts import render

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a subscription looks for new notifications
LOOKBACK_S = 1.0  # a notification committed this late after a newer one is still seen
CLEANUP_EVERY_S = 10.0
KEEP_NOTIFICATIONS_S = 60.0
CLEANUP_BATCH = 5000  # rows a clean-up statement deletes
CLEANUP_BATCHES = 20  # statements a clean-up round runs at most
# The session every connection gets: UTC timestamps, strict values, READ COMMITTED (as
# PostgreSQL: each statement sees what committed before it; no gap locks).
SQL_MODE = ("STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
            "NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY")


@dataclass(slots=True)
class MysqlParams:
    """Where a MySQL database is and how its sessions are set up."""

    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None
    mariadb: bool = False

    @classmethod
    def from_url(cls, url: str) -> MysqlParams:
        """mysql://user:password@host:port/database (also mysql+aiomysql://), percent-encoded;
        `?unix_socket=/path` connects through a socket.

        Raises:
            ConfigError: no database is named.
        """
        parts = urlsplit(url)
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ConfigError(f"DATABASE_URL: {parts.scheme}:// needs a database name "
                              "(mysql://user:password@host:3306/qstack)")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
            database=database, unix_socket=(query.get("unix_socket") or [None])[0],
        )

    @property
    def init_command(self) -> str:
        # MariaDB before 11.1 knows the isolation variable only as tx_isolation, MySQL 8 only
        # as transaction_isolation; one SET either way (init_command runs one statement).
        isolation = "tx_isolation" if self.mariadb else "transaction_isolation"
        return (f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}', "
                f"{isolation} = 'READ-COMMITTED'")

    def connect_kwargs(self) -> dict[str, Any]:
        """aiomysql.connect() / create_pool() keywords."""
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user, "password": self.password,
            "db": self.database, "charset": "utf8mb4", "autocommit": True,
            "connect_timeout": 10, "init_command": self.init_command,
        }
        if self.unix_socket:
            kwargs["unix_socket"] = self.unix_socket
        return kwargs


async def connect(params: MysqlParams) -> aiomysql.Connection:
    """A connection of its own (autocommit, the qstack session)."""
    async with asyncio.timeout(15):
        return await aiomysql.connect(**params.connect_kwargs())


async def fetch(conn: aiomysql.Connection, sql: str, args: Mapping[str, Any] | None = None
                ) -> list[tuple[Any, ...]]:
    """The rows of one statement on a connection of its own."""
    async with conn.cursor() as cur:
        await cur.execute(render(cur, sql, args or {}))
        return list(await cur.fetchall())


async def close_quietly(conn: aiomysql.Connection | None) -> None:
    """Say goodbye (COM_QUIT: the server ends the session, and frees its locks, at once)."""
    if conn is None or conn.closed:
        return
    try:
        async with asyncio.timeout(2):
            await conn.ensure_closed()
    except Exception:
        conn.close()


def liveness_lock_name(database: str, worker_id: str) -> str:
    """The worker's GET_LOCK name: locks are server-wide, so it names the database too
    (41 characters, under MySQL's 64)."""
    return "qstack_w_" + hashlib.md5(f"{database}:{worker_id}".encode()).hexdigest()


class _Session(Subscription):
    """A task holding a connection of its own, restarted after a connection loss."""

    name = "session"

    def __init__(self, params: MysqlParams, queries: Mapping[str, str]) -> None:
        self._params, self._q = params, queries
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._refused: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)
        try:
            async with asyncio.timeout(30):
                await self._ready.wait()
        except BaseException:
            await self.close()
            raise
        if self._refused:
            await self.close()
            raise StorageError(self._refused)

    async def _run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        # cancel until it is done: a cancellation that lands as an awaited call completes
        # can be lost, and the loop would go on
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class MysqlLiveness(_Session):
    """GET_LOCK held on a connection of its own while the worker lives: the server frees it
    the moment the session ends, a crashed process's included."""

    name = "liveness"

    def __init__(self, params: MysqlParams, queries: Mapping[str, str], lock: str) -> None:
        super().__init__(params, queries)
        self._lock = lock
        self.held = False

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await connect(self._params)
                [(got,)] = await fetch(conn, self._q["liveness_take"], {"name": self._lock})
                if got != 1:
                    if not self._ready.is_set():
                        self._refused = f"liveness lock {self._lock} is held by another session"
                        self._ready.set()
                        return
                    await asyncio.sleep(0.5)  # our old session may still be closing
                    continue
                self.held = True
                self._ready.set()
                while True:
                    await asyncio.sleep(1.0)
                    async with asyncio.timeout(5):
                        await fetch(conn, "SELECT 1")
            except asyncio.CancelledError:
                if conn is not None and self.held and not conn.closed:
                    with contextlib.suppress(Exception):  # free it now, not at the goodbye
                        async with asyncio.timeout(1):
                            await fetch(conn, self._q["liveness_give"], {"name": self._lock})
                raise
            except Exception as exc:  # reconnect and take the lock again
                log.warning("liveness lock: %s; reconnecting", exc)
                self.held = False
                await asyncio.sleep(0.5)
            finally:
                self.held = False
                await close_quietly(conn)


class MysqlSubscription(_Session):
    """Polls qstack_notifications for the channel on a connection of its own.

    Ids are handed out at insert and become visible at commit, so a smaller id may appear
    after a larger one was seen: every poll reads the ids above the horizon, the largest id
    seen LOOKBACK_S or longer ago, and calls back for those it has not seen yet.
    """

    name = "notifications"

    def __init__(self, params: MysqlParams, queries: Mapping[str, str], channel: str,
                 callback: Callback,
                 on_close: Callable[[MysqlSubscription], None] | None = None) -> None:
        super().__init__(params, queries)
        self._channel, self._callback, self._on_close = channel, callback, on_close
        self._horizon = 0
        self._seen: dict[int, float] = {}

    def wake(self) -> None:
        """Call back now: this process committed a notification of the channel (the poll
        sees the row later and calls back once more; a wake-up is only a hint)."""
        if self._task is not None and not self._task.done():
            self._callback()

    async def close(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
        await super().close()

    async def _run(self) -> None:
        first = True
        while True:
            conn = None
            try:
                conn = await connect(self._params)
                [(last,)] = await fetch(conn, self._q["notifications_last"],
                                        {"channel": self._channel})
                if first:
                    self._horizon = max(self._horizon, last)
                self._ready.set()
                if not first:
                    self._callback()  # something may have happened while we were away
                first = False
                cleanup_at = time.monotonic() + random.uniform(0, CLEANUP_EVERY_S)
                while True:
                    await self._poll(conn)
                    if time.monotonic() >= cleanup_at:
                        cleanup_at = time.monotonic() + CLEANUP_EVERY_S
                        await self._cleanup(conn)
                    await asyncio.sleep(POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any connection trouble
                log.warning("notifications %s: %s; reconnecting", self._channel, exc)
                await asyncio.sleep(0.5)
            finally:
                await close_quietly(conn)

    async def _poll(self, conn: aiomysql.Connection) -> None:
        async with asyncio.timeout(5):
            rows = await fetch(conn, self._q["notifications_since"], {
                "channel": self._channel, "after": self._horizon})
        now = time.monotonic()
        new = [i for (i,) in rows if i not in self._seen]
        for i in new:
            self._seen[i] = now
        old = [i for i, t in self._seen.items() if now - t >= LOOKBACK_S]
        if old:
            self._horizon = max(self._horizon, *old)
            self._seen = {i: t for i, t in self._seen.items() if i > self._horizon}
        if new:
            self._callback()

    async def _cleanup(self, conn: aiomysql.Connection) -> None:
        """Delete notifications older than KEEP_NOTIFICATIONS_S, in bounded batches (a
        backlog left while nobody listened goes over a few rounds)."""
        args = {"age_us": int(KEEP_NOTIFICATIONS_S * 1e6), "batch": CLEANUP_BATCH}
        try:
            for _ in range(CLEANUP_BATCHES):
                async with conn.cursor() as cur:
                    await cur.execute(render(cur, self._q["notifications_cleanup"], args))
                    if cur.rowcount < CLEANUP_BATCH:
                        return
        except Exception as exc:  # another subscriber is at it; next time
            log.debug("notifications clean-up: %s", exc)
