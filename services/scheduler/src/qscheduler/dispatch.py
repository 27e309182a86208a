"""The dispatcher: while leader, hands due pending jobs to the workers that have room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

import aiohttp

from qscheduler import metrics
from qscheduler.selection import RecentAssignments, choose
from qshared.errors import StorageError
from qshared.leases import Lease, leader_key
from qshared.storage import DISPATCH_CHANNEL, Storage

log = logging.getLogger(__name__)

LEADER_KEY = leader_key("dispatcher")
DUE_MARGIN = 0.005  # seconds


class WakePusher:
    """Wakes workers over HTTP (POST /admin/wake) where the database cannot notify them.

    Fire and forget: a push that fails or is slow costs nothing but the wake-up, and the
    worker's poll (QSTACK_DISPATCH_POLL) and its subscription's short poll remain. On
    aiohttp's client, which costs the dispatcher a fraction of httpx's CPU per request (a
    push goes out after every pass that assigned: up to hundreds a second).
    """

    TIMEOUT = aiohttp.ClientTimeout(total=1.0)

    def __init__(self, token: str | None) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: aiohttp.ClientSession | None = None  # made in the running loop
        self._pending: set[asyncio.Task] = set()

    def push(self, urls: list[str]) -> None:
        if not urls:
            return
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self._headers, timeout=self.TIMEOUT)
        for url in urls:
            task = asyncio.create_task(self._post(self._http, url.rstrip("/") + "/admin/wake"))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _post(http: aiohttp.ClientSession, url: str) -> None:
        try:
            async with http.post(url) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("wake-up push to %s failed: %s", url, exc)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._http is not None:
            await self._http.close()


class Dispatcher:
    """One per scheduler replica; only the lease holder dispatches."""

    def __init__(
        self, storage: Storage, *, owner: str, leader_ttl: float, heartbeat_ttl: float,
        poll: float, batch: int, token: str | None = None,
    ) -> None:
        self.storage = storage
        self._pusher = WakePusher(token) if storage.push_wakeups else None
        self.lease = Lease(storage, LEADER_KEY, owner, leader_ttl)
        self.heartbeat_ttl = heartbeat_ttl
        self.poll = poll
        self.batch = batch
        self.recent = RecentAssignments()
        self.wake = asyncio.Event()
        self.passes = 0
        self.running = False
        self.last_pass_at: float | None = None

    async def dispatch_once(self) -> tuple[int, bool]:
        """One pass. Returns: jobs assigned, and whether another pass at once may assign more:
        the pass took a whole batch, or a queue as many jobs as its limit (more may be due,
        and the limit may have been the batch, not the room). Otherwise the pass took every
        job it found due that could go, and the next pass comes with a wake-up (an enqueue, a
        finished job, a new worker), at the next due time or at the poll: a pass after every
        pass that assigned cost two more queries per job when jobs came one at a time."""
        workers = [w for w in await self.storage.worker_slots(self.heartbeat_ttl) if w.free > 0]
        if not workers:
            return 0, False
        limits: dict[str, int] = {}
        for w in workers:
            for q in w.queues:
                limits[q] = min(limits.get(q, 0) + w.free, self.batch)
        recent = self.recent.counts()

        queue_of: dict[int, str] = {}

        def chooser(jobs):
            t0 = time.perf_counter()
            jobs = list(jobs)
            queue_of.update((j.id, j.queue_name) for j in jobs)
            try:
                return choose(jobs, workers, recent)[: self.batch]
            finally:
                metrics.SELECTION_SECONDS.observe(time.perf_counter() - t0)

        t0 = time.perf_counter()
        pairs = await self.storage.dispatch([w.id for w in workers], limits, chooser)
        if pairs:
            metrics.DISPATCH_SECONDS.observe(time.perf_counter() - t0)
            metrics.DISPATCH_BATCH.observe(len(pairs))
            self.recent.add(pairs)
            if self._pusher is not None:
                assigned_to = {worker_id for _, worker_id in pairs}
                self._pusher.push([w.admin_url for w in workers
                                   if w.id in assigned_to and w.admin_url])
        per_queue = Counter(queue_of[job_id] for job_id, _ in pairs)
        for queue, n in per_queue.items():
            metrics.JOBS_ASSIGNED.labels(queue_name=queue).inc(n)
        full = len(pairs) >= self.batch or any(n >= limits[q] for q, n in per_queue.items())
        return len(pairs), full

    async def _sleep_time(self) -> float:
        """Until the next job is due, on the database's clock, plus a margin so that the next
        pass sees it due (a pass a hair early would find nothing and wait for the poll)."""
        due_in = await self.storage.next_due_in()
        if due_in is None:
            return self.poll
        return min(max(due_in, 0.0) + DUE_MARGIN, self.poll)

    async def run(self, stop: asyncio.Event) -> None:
        """Chase the lease and dispatch until `stop`."""
        self.running = True
        try:
            await self._run(stop)
        finally:
            self.running = False

    async def _run(self, stop: asyncio.Event) -> None:
        lease_stop = asyncio.Event()
        lease_task = asyncio.create_task(self.lease.run(lease_stop), name="dispatcher-lease")
        sub = None
        try:
            while not stop.is_set():
                if sub is None:
                    with contextlib.suppress(StorageError):
                        sub = await self.storage.subscribe(DISPATCH_CHANNEL, self.wake.set)
                metrics.LEADER.labels(role="dispatcher").set(1 if self.lease.is_leader else 0)
                if not self.lease.is_leader:
                    await self._wait(stop, self.lease.changed, self.lease.ttl / 3)
                    self.lease.changed.clear()
                    continue
                self.wake.clear()
                try:
                    _, again = await self.dispatch_once()
                    self.passes += 1
                    self.last_pass_at = time.monotonic()
                    # (a wake-up during the pass: the next pass at once, without asking when
                    # the next job falls due)
                    timeout = 0 if again or self.wake.is_set() else await self._sleep_time()
                except StorageError as exc:
                    log.warning("dispatch pass failed: %s", exc)
                    timeout = 0.5
                except Exception:  # the loop must outlive any single failure
                    log.exception("dispatch pass crashed")
                    timeout = 0.5
                if timeout:
                    await self._wait(stop, self.wake, timeout)
                else:
                    await asyncio.sleep(0)
        finally:
            metrics.LEADER.labels(role="dispatcher").set(0)
            if sub is not None:
                await sub.close()
            await self.close()
            lease_stop.set()
            await lease_task

    async def close(self) -> None:
        """Let go of the wake-up pusher's connections (run() does it when it ends)."""
        if self._pusher is not None:
            await self._pusher.close()

    @staticmethod
    async def _wait(stop: asyncio.Event, event: asyncio.Event, timeout: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(event.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
