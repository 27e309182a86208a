"""Batches job outcomes and writes them in one statement every few milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from qshared.errors import StorageError
from qshared.storage import Storage
from qshared.storage.base import Assignment, Outcome

log = logging.getLogger(__name__)


class Reporter:
    """Collects starts and outcomes; a start and its outcome in one window become one row."""

    def __init__(
        self, storage: Storage, interval: float,
        on_written: Callable[[list[Outcome], list[tuple[int, str]]], None],
    ) -> None:
        self.storage = storage
        self.interval = interval
        self.on_written = on_written
        self._buf: dict[int, Outcome] = {}
        self._pending = asyncio.Event()
        self._lock = asyncio.Lock()

    def started(self, a: Assignment, at: float) -> None:
        self._buf[a.id] = Outcome(a.id, a.token, "running", started=at)
        self._pending.set()

    def finished(self, outcome: Outcome) -> None:
        self._buf[outcome.id] = outcome
        self._pending.set()

    def __len__(self) -> int:
        return len(self._buf)

    async def flush(self) -> bool:
        """Write what is buffered. Returns: False when the database refused (kept for later)."""
        async with self._lock:
            if not self._buf:
                return True
            batch, self._buf = self._buf, {}
            outcomes = list(batch.values())
            try:
                applied = await self.storage.report(outcomes)
            except Exception as exc:  # keep the outcomes whatever went wrong; never lose them
                if isinstance(exc, StorageError):
                    log.warning("writing %d outcomes failed, will retry: %s", len(outcomes), exc)
                else:
                    log.exception("writing %d outcomes failed, will retry", len(outcomes))
                for o in outcomes:  # newer news about a job wins over the failed batch
                    self._buf.setdefault(o.id, o)
                self._pending.set()
                return False
            self.on_written(outcomes, applied)
            return True

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every `interval` while there is something to write, until `stop`."""
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._pending.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                break
            await asyncio.sleep(self.interval)
            self._pending.clear()
            if not await self.flush():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        await self.flush()
