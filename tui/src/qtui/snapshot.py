"""The data layer: one `Snapshot` of everything a refresh fetched, service by service.

The services are asked concurrently; one that fails keeps its previous data (marked stale
by its `ServiceState`) and does not hold back the others' new data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from qshared.errors import NotFound, ServiceUnavailable
from qtui.client import AdminApi

JOB_STATES = ("pending", "assigned", "running", "succeeded", "dead", "cancelled")
# Fields each service fills in; an unreachable service keeps the previous values of its own.
FIELDS = {
    "registry": ("system", "workers"),
    "scheduler": ("scheduler_health", "queues", "throughput", "jobs", "locks"),
    "failover": ("failover_health", "events"),
    "prometheus": ("alerts",),
}


@dataclass(frozen=True)
class JobQuery:
    """The jobs screen's search: `id:42`, `queue:emails`, `status:dead`, `task:send` or words.

    A bare number is an id, a bare job state a status, any other bare word a task name.
    """

    id: int | None = None
    queue: str | None = None
    status: str | None = None
    task: str | None = None

    @classmethod
    def parse(cls, text: str) -> JobQuery:
        values: dict[str, Any] = {}
        for word in text.split():
            key, sep, value = word.partition(":")
            if not sep:
                key, value = ("id" if word.isdigit() else
                              "status" if word in JOB_STATES else "task"), word
            if key in ("id", "queue", "status", "task", "state") and value:
                key = "status" if key == "state" else key
                values[key] = int(value) if key == "id" and value.isdigit() else value
        if not isinstance(values.get("id", 0), int):
            values.pop("id")
        return cls(**values)

    @property
    def selector(self) -> dict[str, Any]:
        """The filter as a bulk-action body (ids/queue/status/task)."""
        body: dict[str, Any] = {"queue": self.queue, "status": self.status, "task": self.task}
        if self.id is not None:
            body["ids"] = [self.id]
        return {k: v for k, v in body.items() if v is not None}

    def __str__(self) -> str:
        parts = [f"{k}:{v}" for k, v in (("id", self.id), ("queue", self.queue),
                                           ("status", self.status), ("task", self.task)) if v]
        return " ".join(parts)


@dataclass
class ServiceState:
    """Whether a service answered the last refresh, and since when it has not."""

    name: str
    url: str
    ok: bool = True
    unreachable: bool = False  # no answer at all (not an error answer such as a 401)
    error: str | None = None
    last_ok: float | None = None
    failing_since: float | None = None


@dataclass
class Snapshot:
    """Everything the screens show, as of `taken_at` (the injected clock's time)."""

    taken_at: float = 0.0
    services: dict[str, ServiceState] = field(default_factory=dict)
    system: dict[str, Any] | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)
    scheduler_health: dict[str, Any] | None = None
    queues: list[dict[str, Any]] = field(default_factory=list)
    queue_rates: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, Any] | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)
    job_query: JobQuery = JobQuery()
    locks: list[dict[str, Any]] = field(default_factory=list)
    failover_health: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] | None = None
    loaded: bool = False

    def stale(self, service: str) -> bool:
        """True when the service's data is older than this snapshot (it did not answer)."""
        state = self.services.get(service)
        return state is not None and not state.ok

    def age(self, service: str) -> float | None:
        """Seconds since the service last answered; None if it never did."""
        state = self.services.get(service)
        if state is None or state.last_ok is None:
            return None
        return self.taken_at - state.last_ok

    @property
    def down(self) -> list[ServiceState]:
        return [s for s in self.services.values() if not s.ok]


async def _registry(client: AdminApi, query: JobQuery) -> dict[str, Any]:
    system, workers = await asyncio.gather(client.system_health(), client.workers())
    return {"system": system, "workers": workers}


async def _jobs(client: AdminApi, query: JobQuery) -> list[dict[str, Any]]:
    if query.id is not None:
        try:
            return [await client.job(query.id)]
        except NotFound:
            return []
    return await client.jobs(queue=query.queue, status=query.status, task=query.task)


async def _scheduler(client: AdminApi, query: JobQuery) -> dict[str, Any]:
    health, queues, throughput, jobs, locks = await asyncio.gather(
        client.scheduler_health(), client.queues(), client.throughput(60),
        _jobs(client, query), client.locks(),
    )
    return {"scheduler_health": health, "queues": queues, "throughput": throughput,
            "jobs": jobs, "locks": locks}


async def _failover(client: AdminApi, query: JobQuery) -> dict[str, Any]:
    health, events = await asyncio.gather(client.failover_health(), client.failover_events(100))
    return {"failover_health": health, "events": events}


async def _prometheus(client: AdminApi, query: JobQuery) -> dict[str, Any]:
    return {"alerts": await client.alerts()}


FETCHERS: dict[str, Callable[[AdminApi, JobQuery], Awaitable[dict[str, Any]]]] = {
    "registry": _registry, "scheduler": _scheduler, "failover": _failover,
    "prometheus": _prometheus,
}


def _queue_rates(before: Snapshot, queues: list[dict[str, Any]], now: float) -> dict[str, float]:
    """Jobs finished per second in each queue since the previous refresh."""
    if not before.loaded or before.stale("scheduler") or now <= before.taken_at:
        return dict(before.queue_rates)
    done_before = {q["queue"]: q["succeeded"] + q["dead"] for q in before.queues}
    dt = now - before.taken_at
    return {q["queue"]: max(q["succeeded"] + q["dead"] - done_before.get(q["queue"], 0), 0) / dt
            for q in queues if q["queue"] in done_before}


async def refresh(client: AdminApi, before: Snapshot, query: JobQuery, now: float) -> Snapshot:
    """A new snapshot: every service asked at once; failures keep `before`'s data, stale.

    Never raises for a service's failure: it is recorded in the service's state.
    """
    names = [n for n in FETCHERS if n in client.urls]
    results = await asyncio.gather(*(FETCHERS[n](client, query) for n in names),
                                   return_exceptions=True)
    after = replace(before, taken_at=now, services=dict(before.services), loaded=True)
    for name, result in zip(names, results, strict=True):
        old = before.services.get(name) or ServiceState(name, client.urls[name])
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            after.services[name] = replace(
                old, ok=False, error=str(result) or type(result).__name__,
                unreachable=isinstance(result, ServiceUnavailable),
                failing_since=old.failing_since if not old.ok else now,
            )
            continue
        after.services[name] = replace(old, ok=True, unreachable=False, error=None, last_ok=now,
                                      failing_since=None)
        if name == "scheduler":
            after.queue_rates = _queue_rates(before, result["queues"], now)
            after.job_query = query
        for key in FIELDS[name]:
            setattr(after, key, result[key])
    return after
