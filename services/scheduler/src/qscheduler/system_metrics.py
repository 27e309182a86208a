"""`/admin/metrics`: the system-level gauges, computed from the database at most once per
interval per replica, whatever the number of scrapers."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from qshared.storage import Storage

WORKER_STATES = ("active", "draining", "stopped", "failed")


class SystemMetrics:
    """A registry of its own (not the process's), refreshed when older than `ttl` seconds."""

    def __init__(self, storage: Storage, ttl: float) -> None:
        self.storage = storage
        self.ttl = ttl
        self.registry = CollectorRegistry()
        self.queue_length = Gauge("queue_length", "Due pending jobs per queue.", ["queue_name"],
                                  registry=self.registry)
        self.jobs = Gauge("qstack_queue_jobs", "Jobs per queue and state.",
                          ["queue_name", "state"], registry=self.registry)
        self.oldest = Gauge("qstack_oldest_pending_age_seconds",
                            "Age of the oldest due pending job per queue.", ["queue_name"],
                            registry=self.registry)
        self.workers = Gauge("qstack_workers", "Registered workers by status.", ["status"],
                             registry=self.registry)
        self._body = b""
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        """The text format, recomputed only when the last one is older than the TTL."""
        async with self._lock:
            if not self._body or time.monotonic() - self._at >= self.ttl:
                await self._refresh()
                self._body = generate_latest(self.registry)
                self._at = time.monotonic()
            return self._body

    async def _refresh(self) -> None:
        stats = await self.storage.queue_stats()
        workers = await self.storage.list_workers(None)
        self.queue_length.clear()
        self.jobs.clear()
        self.oldest.clear()
        for row in stats:
            queue = row["queue_name"]
            self.queue_length.labels(queue_name=queue).set(row["pending"])
            self.oldest.labels(queue_name=queue).set(row["oldest_pending_age_s"])
            for state in ("pending", "scheduled", "assigned", "running", "succeeded", "failed",
                          "dead", "cancelled"):
                self.jobs.labels(queue_name=queue, state=state).set(row[state])
        counts = {s: 0 for s in WORKER_STATES}
        for w in workers:
            counts[w["status"]] = counts.get(w["status"], 0) + 1
        for status, n in counts.items():
            self.workers.labels(status=status).set(n)
