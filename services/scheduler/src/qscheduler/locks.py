"""HTTP handlers of the lock manager: acquire (with waiting), renew, release, inspect, clear.

A waiting acquire is woken by the `qstack_locks` NOTIFY that a release sends (one LISTEN
per scheduler process, shared by every waiter), by a release through this process at once,
and by a short poll as a safety net (a lease that simply expires sends nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

from aiohttp import web

from qscheduler import metrics
from qscheduler.views import STORAGE
from qshared.errors import Conflict, NotFound, ValidationFailed
from qshared.http import json_response, read_model
from qshared.schemas import (
    LockAcquireIn,
    LockInfoOut,
    LockListOut,
    LockOut,
    LockReleasedOut,
    LockReleaseIn,
    LockRenewIn,
    LocksClearedOut,
)
from qshared.storage import Storage
from qshared.storage.base import Subscription

log = logging.getLogger(__name__)

LOCKS_CHANNEL = "qstack_locks"
POLL_S = 0.2  # the first waiter's safety net: a lost NOTIFY, a lease that just expires
POLL_IDLE_S = 1.0  # how often the waiters behind it try anyway
RETRY_LISTEN_S = 30.0  # after a failed LISTEN, waiters poll for this long before retrying
MAX_KEY = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def lock_key(request: web.Request) -> str:
    """The `{key}` path parameter (aiohttp has undone its URL encoding), validated."""
    key = request.match_info["key"]
    if not 1 <= len(key) <= MAX_KEY:
        raise ValidationFailed(f"key: must be 1 to {MAX_KEY} characters, got {len(key)}")
    if bad := _CONTROL.search(key):
        raise ValidationFailed(
            f"key: control characters are not allowed (found {bad.group()!r} at {bad.start()})"
        )
    return key


class Waiter:
    """One waiting acquire request: woken through `event` when it is its turn to try."""

    __slots__ = ("event", "got")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.got = False


class LockWaiters:
    """The acquire requests waiting on keys, first come first served, and the LISTEN that
    wakes them.

    A possible release wakes only the first waiter of the key, so a release costs one
    attempt instead of one per waiter and the lock goes round in arrival order (within this
    process; requests to other schedulers and new arrivals can still get in first).
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._queues: dict[str, list[Waiter]] = {}
        self._sub: Subscription | None = None
        self._starting: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._closed = False

    def wake(self, key: str | None = None) -> None:
        """The key may be free: its first waiter tries (every key's, when key is None)."""
        queues = list(self._queues.values()) if key is None else [self._queues.get(key)]
        for queue in queues:
            if queue:
                queue[0].event.set()

    def _on_notify(self, payload: str | None = None) -> None:
        # The storage callback carries no payload today (and is called after a reconnect),
        # so any notification wakes the first waiter of every key.
        self.wake(payload)

    def is_first(self, key: str, waiter: Waiter) -> bool:
        """Whether it is the waiter's turn."""
        queue = self._queues.get(key)
        return bool(queue) and queue[0] is waiter

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Waiter]:
        """A place in the key's queue for the block."""
        self._listen()
        waiter = Waiter()
        queue = self._queues.setdefault(key, [])
        queue.append(waiter)
        try:
            yield waiter
        finally:
            first = queue[0] is waiter
            queue.remove(waiter)
            if not queue:
                del self._queues[key]
            elif first and not waiter.got:  # a wake-up it took without using passes on
                queue[0].event.set()

    def _listen(self) -> None:
        """Start the shared LISTEN in the background on first need; waiters poll meanwhile."""
        if self._sub is not None or self._starting is not None or self._closed:
            return
        if time.monotonic() < self._retry_at:
            return
        self._starting = asyncio.create_task(self._subscribe(), name="locks-listen")

    async def _subscribe(self) -> None:
        try:
            self._sub = await self._storage.subscribe(LOCKS_CHANNEL, self._on_notify)
        except Exception as exc:  # waiters keep polling; try again later
            log.warning("LISTEN %s failed (%s); lock waiters poll every %ss",
                        LOCKS_CHANNEL, exc, POLL_S)
            self._retry_at = time.monotonic() + RETRY_LISTEN_S
        finally:
            self._starting = None
        if self._closed and self._sub is not None:
            await self._sub.close()

    async def close(self) -> None:
        """End the LISTEN and wake every waiter (they poll once more, then answer)."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._sub is not None:
            await self._sub.close()
            self._sub = None
        self.wake()


WAITERS = web.AppKey("lock_waiters", LockWaiters)


def waiters_of(app: web.Application) -> LockWaiters:
    """The application's LockWaiters."""
    return app[WAITERS]


async def waiters_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup_ctx entry (after the storage's): the waiters, and their LISTEN closed after."""
    app[WAITERS] = LockWaiters(app[STORAGE])
    yield
    await app[WAITERS].close()


async def _holder(storage: Storage, key: str) -> dict[str, Any] | None:
    """The key's live lock row, or None."""
    row = await storage.get_lock(key)
    return row if row is not None and row["live"] else None


def _lease_end(row: dict[str, Any]) -> str:
    return f"{row['expires_at'].isoformat()} (in {max(row['expires_in_s'], 0.0):.3f}s)"


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _held(key: str, holder: dict[str, Any] | None, wait_ms: int) -> Conflict:
    waited = f"; waited {wait_ms} ms" if wait_ms else ""
    if holder is None:
        return Conflict(f"lock {key!r} is held by another owner{waited}", code="lock_held")
    return Conflict(
        f"lock {key!r} is held by {holder['owner']!r} (token {holder['token']}) "
        f"until {_lease_end(holder)}{waited}", code="lock_held",
    )


async def _take(request: web.Request, key: str, body: LockAcquireIn, started: float
                ) -> tuple[int, datetime]:
    """Try, and retry when woken until the lock is free or wait_ms has passed.

    Raises:
        Conflict: naming the holder and the end of its lease.
    """
    storage = request.app[STORAGE]
    deadline = started + body.wait_ms / 1000
    ttl = body.ttl_ms / 1000
    contended = last_try = False
    waiters = waiters_of(request.app) if body.wait_ms else None
    with waiters.watch(key) if waiters else contextlib.nullcontext() as waiter:
        tried_at = -POLL_IDLE_S
        while True:
            now = time.perf_counter()
            remaining = deadline - now
            turn = (waiter is None or waiter.event.is_set() or waiters.is_first(key, waiter)
                    or now - tried_at >= POLL_IDLE_S)
            if turn or remaining <= 0:
                # Cleared before the attempt: a release committed after the attempt saw the
                # lock held sets it again, so no wake-up falls between attempt and wait.
                if waiter is not None:
                    waiter.event.clear()
                tried_at = now
                got = await storage.acquire_lock(key, body.owner, ttl)
                if got is not None:
                    if waiter is not None:
                        waiter.got = True
                    return got
                if not contended:
                    contended = True
                    metrics.LOCK_CONTENTION.inc()
                remaining = deadline - time.perf_counter()
                if waiter is None or remaining <= 0 or _client_gone(request):
                    holder = await _holder(storage, key)
                    if holder is None and not last_try:  # freed just now: one more try
                        last_try = True
                        continue
                    raise _held(key, holder, body.wait_ms)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), min(remaining, POLL_S))


async def acquire(request: web.Request) -> web.Response:
    """POST /api/v1/locks/{key}: take the lock, waiting up to wait_ms for its holder."""
    key = lock_key(request)
    body = await read_model(request, LockAcquireIn)
    started = time.perf_counter()
    outcome = "conflict"
    try:
        token, expires_at = await _take(request, key, body, started)
        if body.wait_ms and _client_gone(request):  # nobody would use or release it
            await request.app[STORAGE].release_lock(key, body.owner, token)
            waiters_of(request.app).wake(key)
            raise Conflict(f"the client left before lock {key!r} was free")
        outcome = "acquired"
    finally:
        metrics.LOCK_ACQUIRE_SECONDS.labels(outcome=outcome).observe(time.perf_counter() - started)
    return json_response(LockOut(key=key, owner=body.owner, token=token, expires_at=expires_at))


async def renew(request: web.Request) -> web.Response:
    """POST /api/v1/locks/{key}/renew: extend the owner's lease by ttl_ms from now."""
    key = lock_key(request)
    body = await read_model(request, LockRenewIn)
    got = await request.app[STORAGE].renew_lock(key, body.owner, body.token, body.ttl_ms / 1000)
    if got is None:
        raise Conflict(
            f"lock lost: {key!r} is no longer held by {body.owner!r} with token {body.token}",
            code="lock_lost",
        )
    return json_response(LockOut(key=key, owner=body.owner, token=got[0], expires_at=got[1]))


async def release(request: web.Request) -> web.Response:
    """POST /api/v1/locks/{key}/release: give the lock back; 409 when not this owner's."""
    key = lock_key(request)
    body = await read_model(request, LockReleaseIn)
    if not await request.app[STORAGE].release_lock(key, body.owner, body.token):
        raise Conflict(f"lock {key!r} is not held by {body.owner!r} with token {body.token}",
                       code="lock_not_held")
    waiters_of(request.app).wake(key)  # this process's waiters need not wait for the NOTIFY
    return json_response(LockReleasedOut(released=True))


async def get_lock(request: web.Request) -> web.Response:
    """GET /api/v1/locks/{key}: the live holder, or 404."""
    key = lock_key(request)
    row = await _holder(request.app[STORAGE], key)
    if row is None:
        raise NotFound(f"lock {key!r} is not held")
    return json_response(LockInfoOut.from_row(row))


async def list_locks(request: web.Request) -> web.Response:
    """GET /admin/queue/locks: every lock row, live or expired."""
    rows = await request.app[STORAGE].list_locks()
    return json_response(LockListOut(locks=[LockInfoOut.from_row(r) for r in rows]))


async def clear_stale(request: web.Request) -> web.Response:
    """POST /admin/queue/locks/clear-stale: delete the expired lock rows."""
    keys = await request.app[STORAGE].clear_stale_locks(0.0)
    waiters = waiters_of(request.app)
    for key in keys:
        waiters.wake(key)
    return json_response(LocksClearedOut(cleared=len(keys), keys=keys))
