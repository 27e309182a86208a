"""PostgreSQL sessions of their own: LISTEN subscriptions and the worker liveness lock."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import asyncpg

from qshared.errors import StorageError
from qshared.storage.base import Callback, Subscription

log = logging.getLogger(__name__)


def liveness_key(schema: str, worker_id: str) -> int:
    """The worker's advisory-lock key: 63 bits of a hash of its schema and id."""
    digest = hashlib.md5(f"qstack:{schema}:worker:{worker_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


class PgLiveness(Subscription):
    """A session-level advisory lock held on a connection of its own while the worker lives."""

    def __init__(self, dsn: str, key: int) -> None:
        self._dsn, self._key = dsn, key
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._refused: str | None = None
        self.held = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="liveness")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=30)
        except BaseException:
            await self.close()
            raise
        if self._refused:
            await self.close()
            raise StorageError(self._refused)

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key):
                    if not self._ready.is_set():
                        self._refused = f"liveness lock {self._key} is held by another session"
                        self._ready.set()
                        return
                    await asyncio.sleep(0.5)  # our old session may still be closing
                    continue
                self.held = True
                self._ready.set()
                while True:
                    await asyncio.sleep(1.0)
                    await conn.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect and take the lock again
                self.held = False
                log.warning("liveness lock: %s; reconnecting", exc)
                await asyncio.sleep(0.5)
            finally:
                self.held = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class PgSubscription(Subscription):
    """A LISTEN on its own connection, re-established after a connection loss."""

    def __init__(self, dsn: str, channel: str, callback: Callback) -> None:
        self._dsn, self._channel, self._callback = dsn, channel, callback
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    def _on_notify(self, *_args: object) -> None:
        self._callback()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"listen:{self._channel}")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=30)
        except BaseException:
            await self.close()
            raise

    async def _run(self) -> None:
        first = True
        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn, timeout=10)
                await self._conn.add_listener(self._channel, self._on_notify)
                self._ready.set()
                if not first:
                    self._callback()  # something may have happened while we were away
                first = False
                while not self._conn.is_closed():
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(Exception):
                        await self._conn.execute("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any connection trouble
                log.warning("listen %s: %s; reconnecting", self._channel, exc)
                await asyncio.sleep(0.5)
            finally:
                if self._conn is not None and not self._conn.is_closed():
                    with contextlib.suppress(Exception):
                        await self._conn.close(timeout=2)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
