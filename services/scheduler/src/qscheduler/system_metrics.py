"""`/admin/metrics`: the system-level gauges, computed from the database at most once per
interval however many scheduler replicas and scrapers there are (the rendering is shared
through the database: `Storage.cached_snapshot`)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from qshared.storage import Storage

WORKER_STATES = ("active", "draining", "stopped", "failed")


class SystemMetrics:
    """A registry of its own (not the process's), recomputed when the shared rendering is older
    than `ttl` seconds."""

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
        self.computed = 0  # how many times this replica computed it (tests, debugging)
        self._lock = asyncio.Lock()  # one database transaction per replica at a time

    async def render(self) -> bytes:
        """The text format: the shared one while it is fresh, else computed here and shared."""
        async with self._lock:
            return await self.storage.cached_snapshot("admin_metrics", self.ttl, self._compute)

    async def _compute(self) -> bytes:
        await self._refresh()
        self.computed += 1
        return generate_latest(self.registry)

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
