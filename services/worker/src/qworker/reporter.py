"""Writes job starts and outcomes in batches.

A start is written before the job runs (the runner waits for it; starts that come together
share one statement): a job that kills its worker at once is then known to have been
running, which is what quarantine counts, and a job taken away meanwhile is not run.
Outcomes are gathered for a few milliseconds and written in batches, on their own
connection, so that they never hold up a start.
"""

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
    """Collects starts and outcomes and writes them in batches."""

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
        self._starts: dict[int, tuple[int, float, asyncio.Future[bool]]] = {}
        self._starts_pending = asyncio.Event()
        self._start_lock = asyncio.Lock()

    def started(self, a: Assignment, at: float) -> asyncio.Future[bool]:
        """Record a start. Returns: a future, True once written, False if the job is no
        longer this worker's (its token is stale): then it must not run.
        """
        future = asyncio.get_running_loop().create_future()
        self._starts[a.id] = (a.token, at, future)
        self._starts_pending.set()
        return future

    def finished(self, outcome: Outcome) -> None:
        self._buf[outcome.id] = outcome
        self._pending.set()

    def __len__(self) -> int:
        return len(self._buf) + len(self._starts)

    async def flush_starts(self) -> bool:
        """Write the waiting starts. Returns: False when the database refused (kept)."""
        async with self._start_lock:
            if not self._starts:
                return True
            batch, self._starts = self._starts, {}
            try:
                moved = await self.storage.mark_running(
                    [(job_id, token, at) for job_id, (token, at, _) in batch.items()]
                )
            except Exception as exc:  # keep them whatever went wrong; the jobs wait
                log.warning("writing %d starts failed, will retry: %r", len(batch), exc,
                            exc_info=not isinstance(exc, StorageError))
                for job_id, entry in batch.items():
                    self._starts.setdefault(job_id, entry)
                return False
            for job_id, (_token, _at, future) in batch.items():
                if not future.done():
                    future.set_result(job_id in moved)
            return True

    async def flush(self) -> bool:
        """Write starts, then outcomes. Returns: False when the database refused (kept)."""
        starts_ok = await self.flush_starts()
        return await self.flush_outcomes() and starts_ok

    async def flush_outcomes(self) -> bool:
        """Write the gathered outcomes. Returns: False when the database refused (kept)."""
        async with self._lock:
            if not self._buf:
                return True
            batch, self._buf = self._buf, {}
            outcomes = list(batch.values())
            try:
                applied = await self.storage.report(outcomes)
            except Exception as exc:  # keep the outcomes whatever went wrong; never lose them
                log.warning("writing %d outcomes failed, will retry: %r", len(outcomes), exc,
                            exc_info=not isinstance(exc, StorageError))
                for o in outcomes:  # newer news about a job wins over the failed batch
                    self._buf.setdefault(o.id, o)
                return False
            self.on_written(outcomes, applied)
            return True

    async def _loop(self, stop: asyncio.Event, event: asyncio.Event, delay: float,
                    write: Callable[[], object]) -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(event.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                break
            await asyncio.sleep(delay)  # 0: gather what else starts in this turn of the loop
            event.clear()
            if not await write():  # type: ignore[misc]
                event.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.2)

    async def run(self, stop: asyncio.Event) -> None:
        """Write starts at once and outcomes every `interval`, until `stop`; then flush."""
        await asyncio.gather(
            self._loop(stop, self._pending, self.interval, self.flush_outcomes),
            self._loop(stop, self._starts_pending, 0, self.flush_starts),
        )
        await self.flush()
