"""Distributed locks from Python: an async client of the scheduler's lock manager.

    async with Locks(url, token) as locks:
        async with locks.hold("report:42", ttl=30) as token:
            ...  # pass `token` to whatever the lock protects, as its fencing token

A lock is held until its lease ends; `hold()` renews it in the background every ttl/3 and
raises `LockLost` on exit when a renewal found it gone (someone else may have held it since).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from qshared.client import raise_for_response
from qshared.errors import Conflict, NotFound, QstackError, ServiceUnavailable

log = logging.getLogger(__name__)


class LockLost(Conflict):
    """A lock's lease ended or passed to another owner before it was released."""

    code = "lock_lost"


@dataclass(frozen=True, slots=True)
class Held:
    """A held lease: the key, its owner, the fencing token, when it ends and its length."""

    key: str
    owner: str
    token: int
    expires_at: datetime
    ttl: float


def default_owner() -> str:
    """`hostname:pid:random`: unique per acquisition unless the caller names an owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _ms(seconds: float) -> int:
    return max(round(seconds * 1000), 1)


class Locks:
    """Async client of the lock manager (`/api/v1/locks/{key}` on the scheduler).

    Each acquisition gets its own owner unless one is given: the same owner acquiring a
    key it holds takes it again (with a new token), so sharing an owner between tasks
    would let them hold the lock at the same time.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                       transport=transport)

    async def _post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        try:
            resp = await self._http.post(path, json=body, timeout=timeout or self._timeout)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{self._http.base_url}: {exc!r}") from exc
        return raise_for_response(resp)

    @staticmethod
    def _path(key: str, action: str = "") -> str:
        return f"/api/v1/locks/{quote(key, safe='')}{action}"

    async def acquire(
        self, key: str, *, owner: str | None = None, ttl: float = 30.0, wait: float = 0.0
    ) -> Held:
        """Take the lock for `ttl` seconds, waiting up to `wait` seconds for its holder.

        Raises:
            Conflict: another owner still held it when the wait ended (the message names it).
        """
        owner = owner or default_owner()
        body = {"owner": owner, "ttl_ms": _ms(ttl), "wait_ms": round(wait * 1000)}
        out = await self._post(self._path(key), body, timeout=self._timeout + wait)
        return Held(key, owner, out["token"], datetime.fromisoformat(out["expires_at"]), ttl)

    async def renew(self, held: Held, ttl: float | None = None) -> Held:
        """Extend the lease by `ttl` (default: its own length) from now.

        Raises:
            LockLost: the lease had ended or another owner holds the lock.
        """
        ttl = held.ttl if ttl is None else ttl
        body = {"owner": held.owner, "token": held.token, "ttl_ms": _ms(ttl)}
        try:
            out = await self._post(self._path(held.key, "/renew"), body)
        except Conflict as exc:
            raise LockLost(exc.message) from exc
        return Held(held.key, held.owner, held.token,
                    datetime.fromisoformat(out["expires_at"]), ttl)

    async def release(self, held: Held) -> None:
        """Give the lock back.

        Raises:
            Conflict: it was not held by this owner with this token any more.
        """
        await self._post(self._path(held.key, "/release"),
                         {"owner": held.owner, "token": held.token})

    async def holder(self, key: str) -> dict[str, Any] | None:
        """Returns: the live holder's row (owner, token, expires_at ...), or None."""
        try:
            resp = await self._http.get(self._path(key))
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{self._http.base_url}: {exc!r}") from exc
        try:
            return raise_for_response(resp)
        except NotFound:
            return None

    def hold(
        self, key: str, ttl: float = 30.0, wait: float = 10.0, owner: str | None = None
    ) -> Hold:
        """An async context manager holding the lock; `as` gives the fencing token."""
        return Hold(self, key, ttl=ttl, wait=wait, owner=owner)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Locks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Hold:
    """The lock held for a block: renewed every ttl/3, released on exit.

    `lost` is set (a LockLost) as soon as a renewal finds the lease gone; the block can
    check it, and leaving the block raises it unless the block raised something itself.
    """

    def __init__(
        self, locks: Locks, key: str, *, ttl: float, wait: float, owner: str | None
    ) -> None:
        self._locks, self.key, self.ttl, self.wait, self.owner = locks, key, ttl, wait, owner
        self.held: Held | None = None
        self.lost: LockLost | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> int:
        sent = time.monotonic()
        self.held = await self._locks.acquire(self.key, owner=self.owner, ttl=self.ttl,
                                              wait=self.wait)
        # Measured from before the request was sent, the local end of the lease is never
        # later than the server's (earlier after a wait: renewal trouble is then given up on
        # sooner, which is the safe side).
        self._task = asyncio.create_task(self._renew(sent + self.ttl), name=f"renew:{self.key}")
        return self.held.token

    async def _renew(self, lease_end: float) -> None:
        assert self.held is not None
        period = self.ttl / 3
        pause = period
        while True:
            await asyncio.sleep(pause)
            sent = time.monotonic()
            try:
                self.held = await self._locks.renew(self.held)
            except LockLost as exc:
                self.lost = exc
                return
            except QstackError as exc:  # unreachable or failing: retry while the lease lasts
                left = lease_end - time.monotonic()
                if left <= 0:
                    self.lost = LockLost(f"lock {self.key!r}: no renewal got through before "
                                         f"the lease ended (last error: {exc.message})")
                    return
                log.warning("renewing lock %r failed (%s); retrying", self.key, exc.message)
                pause = min(period, max(left / 4, 0.01))
                continue
            lease_end = sent + self.ttl
            pause = period

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, _tb: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.lost is None and self.held is not None:
            try:
                await self._locks.release(self.held)
            except Conflict as err:
                self.lost = LockLost(f"lock {self.key!r} was lost while held: {err.message}")
            except QstackError as err:  # the lease ends by itself; nothing else to do
                log.warning("releasing lock %r failed: %s", self.key, err.message)
        if self.lost is None:
            return
        if exc is None:
            raise self.lost
        exc.add_note(f"and the lock was lost while held: {self.lost.message}")
