"""The worker: registers, claims its assignments, runs them, reports, and stops gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from qshared.config import Settings
from qshared.errors import StorageError
from qshared.pool import pool_config
from qshared.storage import Storage, worker_channel
from qshared.storage.base import Assignment, Outcome
from qworker import metrics
from qworker.execution import execute
from qworker.heartbeat import Heartbeat, LoopWatch
from qworker.reporter import Reporter
from qworker.tasks import task_names

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_LABEL = {"succeeded": "succeeded", "pending": "failed", "dead": "dead"}


def new_worker_id() -> str:
    """host-pid-random: unique, readable, short enough for channel names."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(2)}"


class Worker:
    """One worker process's job machinery (the HTTP side lives in app.py)."""

    def __init__(
        self, settings: Settings, storage: Storage, *, queues: list[str], concurrency: int,
        prefetch: int, request_exit: Any,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.queues = queues
        metrics.declare_queues(queues)
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.request_exit = request_exit  # called (on the loop) when the worker must exit
        self.id = new_worker_id()
        self.admin_url: str | None = settings.qstack_advertise_url
        self.registered = asyncio.Event()
        self.status = "starting"
        self._held: dict[int, str] = {}  # job id -> queue, until its outcome is written
        self._local: asyncio.PriorityQueue = asyncio.PriorityQueue()
        self._running: dict[int, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._stop_loops = asyncio.Event()
        self._paused = False  # no new claims or starts (draining or stopping)
        self._tasks: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="task")
        self._recent: deque[tuple[float, bool]] = deque(maxlen=1000)
        self.watch = LoopWatch()
        self.reporter = Reporter(storage, settings.qstack_report_interval, self._written)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat: Heartbeat | None = None
        self._sub = None
        self._liveness = None
        headers = {"Authorization": f"Bearer {settings.qstack_token}"} if settings.qstack_token else {}
        self._registry = httpx.AsyncClient(
            base_url=settings.qstack_registry_url, headers=headers, timeout=10
        )

    # -- start -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the loops; registration proceeds in the background until it succeeds."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._register_then_fetch(), name="fetch"),
            asyncio.create_task(self.reporter.run(self._stop_loops), name="reporter"),
            asyncio.create_task(self._watch_loop(), name="loop-watch"),
        ]
        self._tasks += [
            asyncio.create_task(self._run_jobs(), name=f"runner-{i}")
            for i in range(self.concurrency)
        ]
        for t in self._tasks:
            t.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task) -> None:
        """A loop must only end when the worker stops; anything else is a bug worth a log."""
        if task.cancelled() or self._stop_loops.is_set():
            return
        exc = task.exception()
        log.critical("worker loop %s ended unexpectedly: %r; stopping the worker",
                     task.get_name(), exc, exc_info=exc)
        self.request_exit()

    async def _register(self) -> None:
        body = {
            "id": self.id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "queues": self.queues, "concurrency": self.concurrency, "prefetch": self.prefetch,
            "version": VERSION, "admin_url": self.admin_url,
            "config": pool_config(self.settings, task_names()),
        }
        delay = 0.2
        while True:
            try:
                resp = await self._registry.post("/api/v1/workers", json=body)
                if resp.status_code == 201:
                    break
                log.warning("registration refused: %s %s", resp.status_code, resp.text[:300])
            except httpx.HTTPError as exc:
                log.warning("registry unreachable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.status = "active"
        self.registered.set()
        log.info("registered as %s (queues %s, concurrency %d)",
                 self.id, ",".join(self.queues), self.concurrency)

    async def _register_then_fetch(self) -> None:
        # The session-bound lock first: the failover watcher must never see this worker
        # registered without it (it would read a crash).
        while self._liveness is None:
            try:
                self._liveness = await self.storage.hold_liveness(self.id)
            except StorageError as exc:
                log.warning("cannot take the liveness lock yet: %s", exc)
                await asyncio.sleep(1)
        await self._register()
        while self._sub is None and not self._stop_loops.is_set():
            try:
                self._sub = await self.storage.subscribe(worker_channel(self.id), self._wake.set)
            except StorageError as exc:
                log.warning("cannot listen for wake-ups yet: %s", exc)
                await asyncio.sleep(1)
        self._heartbeat = Heartbeat(
            registry_url=self.settings.qstack_registry_url, token=self.settings.qstack_token,
            worker_id=self.id, interval=self.settings.worker_health_check_interval,
            figures=self._figures, on_reply=self._on_heartbeat_reply,
        )
        self._heartbeat.start()
        self._wake.set()
        await self._fetch_loop()

    # -- claiming and running ----------------------------------------------------------
    async def _fetch_loop(self) -> None:
        poll = self.settings.qstack_dispatch_poll
        while not self._stop_loops.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            self._wake.clear()
            if self._paused or self._stop_loops.is_set():
                continue
            try:
                new = await self.storage.claim_assigned(self.id, list(self._held))
            except Exception as exc:  # the loop outlives any failure; the poll retries
                log.warning("claim failed: %r", exc, exc_info=not isinstance(exc, StorageError))
                await asyncio.sleep(0.5)
                continue
            if self._paused:
                continue  # hand_back returns these; do not start them
            for a in new:
                self._held[a.id] = a.queue_name
                self._local.put_nowait(((-a.priority, a.run_at, a.id), a))
            metrics.IN_FLIGHT.set(len(self._held))

    async def _run_jobs(self) -> None:
        while True:
            _, a = await self._local.get()
            if self._paused:
                continue  # returned to pending by hand_back
            await self._run_one(a)

    async def _run_one(self, a: Assignment) -> None:
        started = time.time()
        # No await between the _paused check and this call: see quiesce().
        if not await self.reporter.started(a, started):
            log.warning("job %d is no longer this worker's; not running it", a.id)
            self._held.pop(a.id, None)
            return
        due = max(a.created_at.timestamp(), a.run_at.timestamp())
        metrics.ENQUEUE_TO_START.labels(queue_name=a.queue_name).observe(max(started - due, 0))
        # A task per job, so that a stop can wait for (or cancel) the jobs themselves.
        job = asyncio.create_task(execute(
            a, worker_id=self.id, started=started, executor=self._executor,
            retry_base=self.settings.qstack_retry_base, retry_cap=self.settings.qstack_retry_max,
        ), name=f"job:{a.id}")
        self._running[a.id] = job
        try:
            outcome = await job
        finally:
            self._running.pop(a.id, None)
        metrics.JOB_DURATION.labels(queue_name=a.queue_name).observe(time.time() - started)
        self._recent.append((time.monotonic(), outcome.status == "succeeded"))
        self.reporter.finished(outcome)

    def _written(self, outcomes: list[Outcome], applied: list[tuple[int, str]]) -> None:
        for job_id, status in applied:
            if status == "running":
                continue
            queue = self._held.get(job_id, "unknown")
            metrics.JOBS_PROCESSED.labels(queue_name=queue, status=_LABEL[status]).inc()
            if status == "pending":
                metrics.RETRIES.labels(queue_name=queue).inc()
            elif status == "dead":
                metrics.DEAD.labels(queue_name=queue).inc()
        for o in outcomes:
            if o.status != "running":
                self._held.pop(o.id, None)
        metrics.IN_FLIGHT.set(len(self._held))

    # -- health ------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        period = self.watch.period
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(period)
            lag = max(time.monotonic() - t0 - period, 0.0)
            self.watch.tick(lag)
            metrics.LOOP_LAG.set(lag)

    def _figures(self) -> dict[str, Any]:
        """Called from the heartbeat thread: plain reads only."""
        horizon = time.monotonic() - 60
        recent = [ok for t, ok in list(self._recent) if t >= horizon]
        figures = {
            "in_flight": len(self._held), "loop_lag_ms": self.watch.current_lag() * 1000,
            "jobs_done_recent": len(recent), "jobs_failed_recent": recent.count(False),
        }
        return figures

    def _on_heartbeat_reply(self, status: int, body: dict[str, Any]) -> None:
        """Called from the heartbeat thread; acts on the loop."""
        figures = self._heartbeat.last if self._heartbeat is not None else None
        if figures is not None:  # the figures this heartbeat carried, over a whole interval
            metrics.CPU.set(figures["cpu_percent"])
            metrics.MEMORY.set(figures["memory_bytes"])
        assert self._loop is not None
        if status == 200:
            for command in body.get("commands", []):
                if command == "drain" and not self._paused:
                    self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.drain()))
                elif command == "stop":
                    self._loop.call_soon_threadsafe(self.request_exit)
        elif status in (404, 409):
            code = body.get("error", {}).get("code", "")
            log.warning("registry says %s (%s); stopping", code, status)
            self._loop.call_soon_threadsafe(self.request_exit)
        else:
            # The registry is down or failing: keep the heartbeat in the database directly,
            # so that dispatch goes on without it. (A registry outage never kills workers:
            # the failover watcher holds back TTL deaths while the registry is unhealthy.)
            asyncio.run_coroutine_threadsafe(self._heartbeat_fallback(), self._loop)

    async def _heartbeat_fallback(self) -> None:
        try:
            row = await self.storage.heartbeat(self.id, None)
        except StorageError as exc:
            log.warning("heartbeat fallback failed too: %s", exc)
            return
        if row is None:
            log.warning("this worker is no longer active in the database; stopping")
            self.request_exit()

    # -- stopping ----------------------------------------------------------------------
    async def quiesce(self) -> None:
        """Take no new work and return unstarted jobs.

        Starting is synchronous after the _paused check, so once _paused is set and the
        reporter is flushed, every started job is `running` in the database and the
        ones still `assigned` are safe to hand back.
        """
        self._paused = True
        with contextlib.suppress(StorageError):
            await self.storage.set_worker_status(
                self.id, "draining", from_states=("active", "draining")
            )
        await self.reporter.flush()
        await self._hand_back()

    async def _hand_back(self) -> None:
        try:
            returned = await self.storage.hand_back(self.id)
        except StorageError as exc:
            log.warning("could not hand back jobs: %s", exc)
            return
        for job_id in returned:
            self._held.pop(job_id, None)
        if returned:
            log.info("handed back %d unstarted jobs", len(returned))

    async def drain(self) -> None:
        """An operator's drain: finish what runs, start nothing new, stay registered."""
        if self._paused:
            return
        log.info("draining")
        self.status = "draining"
        await self.quiesce()

    async def shutdown(self, grace: float) -> None:
        """Graceful stop: quiesce, let running jobs finish within `grace`, deregister."""
        log.info("stopping: %d jobs running, grace %.0fs", len(self._running), grace)
        if self.registered.is_set():
            await self.quiesce()
            running = list(self._running.values())
            if running:
                _, late = await asyncio.wait(running, timeout=grace)
                for t in late:
                    t.cancel()
                await self.reporter.flush()
                if late:
                    with contextlib.suppress(StorageError):
                        released = await self.storage.release_running(
                            self.id, "worker stopped before the job finished (grace period over)"
                        )
                        log.warning("released %d unfinished jobs", len(released))
            else:
                await self.reporter.flush()
        self._stop_loops.set()
        for t in self._tasks:
            if t.get_name() != "reporter":
                t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self.registered.is_set():
            await self._hand_back()
            await self._deregister()
        if self._sub is not None:
            await self._sub.close()
        if self._liveness is not None:
            await self._liveness.close()
        await self._registry.aclose()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.status = "stopped"

    async def _deregister(self) -> None:
        try:
            resp = await self._registry.delete(f"/api/v1/workers/{self.id}")
            if resp.status_code == 200:
                return
            log.warning("deregistration refused: %s", resp.status_code)
        except httpx.HTTPError as exc:
            log.warning("registry unreachable for deregistration: %s", exc)
        with contextlib.suppress(StorageError):
            await self.storage.set_worker_status(
                self.id, "stopped", from_states=("active", "draining")
            )
