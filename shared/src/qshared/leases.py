"""Leader election on a distributed_locks row: acquire, renew at a third of the TTL, give up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from qshared.errors import StorageError
from qshared.storage import Storage

log = logging.getLogger(__name__)


LEADER_ROLES = ("dispatcher", "failover")


def leader_key(role: str) -> str:
    """The distributed_locks row of a role's leader lease ("dispatcher", "failover")."""
    return f"qstack:leader:{role}"


class Lease:
    """Keeps trying to hold `key`; `is_leader` is true only while the lease is live."""

    def __init__(self, storage: Storage, key: str, owner: str, ttl: float) -> None:
        self.storage, self.key, self.owner, self.ttl = storage, key, owner, ttl
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic; a margin below the database's expires_at
        self.changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self.token is not None and time.monotonic() < self._valid_until

    async def _step(self) -> None:
        started = time.monotonic()
        try:
            if self.token is None:
                got = await self.storage.acquire_lock(self.key, self.owner, self.ttl)
            else:
                got = await self.storage.renew_lock(self.key, self.owner, self.token, self.ttl)
        except StorageError as exc:
            log.warning("lease %s: %s", self.key, exc)
            return  # keep what we had until it runs out; is_leader checks the clock
        was = self.is_leader
        if got is None:
            self.token = None
            self._valid_until = 0.0
        else:
            self.token = got[0]
            # Count from before the request: the database's clock started no earlier.
            self._valid_until = started + self.ttl * 0.9
        if was != self.is_leader:
            log.info("lease %s: %s", self.key, "acquired" if self.is_leader else "lost")
            self.changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Hold or chase the lease until `stop`; then release it."""
        try:
            while not stop.is_set():
                await self._step()
                # A holder renews at a third of the TTL; a standby asks often, so that it
                # takes over right when a dead leader's lease runs out.
                pause = self.ttl / 3 if self.token is not None else min(self.ttl / 3, 0.2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
        finally:
            if self.token is not None:
                with contextlib.suppress(Exception):
                    await self.storage.release_lock(self.key, self.owner, self.token)
                self.token = None
