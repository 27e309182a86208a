"""Fixed data for qtui's offline tests and snapshots: a small, realistic stack at a fixed time.

`FixedClient` answers like the admin API (same shapes as qshared.schemas and the contract),
records every action, applies the simple ones to its data (a drained worker shows as
draining), and can be told that a service is down.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime
from typing import Any

from qshared.errors import Conflict, NotFound, ServiceUnavailable

NOW = 1767225600.0  # 2026-01-01T00:00:00Z


def iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat().replace("+00:00", "Z")


class Clock:
    """An injected clock that moves only when told to."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def clock() -> float:
    return NOW


def _worker(wid: str, host: str, pid: int, queues: list[str], conc: int, status: str, *,
            busy: int, health: str | None, cpu: float | None, mem: int | None, lag: float | None,
            beat: float, up: float, requested: str | None = None) -> dict[str, Any]:
    return {
        "id": wid, "hostname": host, "pid": pid, "queues": queues, "concurrency": conc,
        "prefetch": 0, "status": status, "requested": requested, "version": "0.1.0",
        "admin_url": f"http://{host}:8090", "started_at": iso(up), "last_heartbeat_at": iso(beat),
        "heartbeat_age_s": beat, "in_flight": busy, "health": health, "cpu_percent": cpu,
        "memory_bytes": mem, "loop_lag_ms": lag,
    }


MB = 1024 * 1024
WORKERS = [
    _worker("worker-a1", "node-a", 4101, ["default", "emails"], 8, "active", busy=5, health="healthy",
            cpu=41.5, mem=182 * MB, lag=1.2, beat=0.8, up=7260),
    _worker("worker-a2", "node-a", 4102, ["default", "emails"], 8, "active", busy=8, health="healthy",
            cpu=88.0, mem=240 * MB, lag=3.4, beat=1.1, up=7250),
    _worker("worker-b1", "node-b", 5120, ["reports"], 4, "draining", busy=2, health="degraded",
            cpu=35.0, mem=151 * MB, lag=120.0, beat=1.9, up=3600, requested="drain"),
    _worker("worker-b2", "node-b", 5121, ["default", "webhooks"], 4, "active", busy=4,
            health="unhealthy", cpu=97.0, mem=610 * MB, lag=950.0, beat=2.2, up=3590),
    _worker("worker-c1", "node-c", 6001, ["default"], 2, "stopped", busy=0, health="healthy",
            cpu=0.0, mem=90 * MB, lag=0.5, beat=5400, up=86400),
    _worker("worker-c2", "node-c", 6002, ["emails", "webhooks"], 4, "failed", busy=0, health=None,
            cpu=None, mem=None, lag=None, beat=95, up=20000),
]


def _queue(name: str, *, pending: int, scheduled: int = 0, assigned: int = 0, running: int = 0,
           succeeded: int = 0, failed: int = 0, dead: int = 0, cancelled: int = 0,
           oldest: float = 0.0, paused: bool = False) -> dict[str, Any]:
    return {"queue": name, "paused": paused, "pending": pending, "scheduled": scheduled,
            "assigned": assigned, "running": running, "succeeded": succeeded, "failed": failed,
            "dead": dead, "cancelled": cancelled, "oldest_pending_age_s": oldest}


QUEUES = [
    _queue("default", pending=1204, scheduled=30, assigned=6, running=9, succeeded=48211,
           failed=12, dead=3, cancelled=5, oldest=42.5),
    _queue("emails", pending=87, assigned=2, running=4, succeeded=12093, failed=2, dead=1, oldest=3.2),
    _queue("reports", pending=310, running=2, succeeded=640, dead=0, cancelled=1, oldest=912.0,
           paused=True),
    _queue("webhooks", pending=0, running=1, succeeded=9981, failed=4, dead=7),
]

TRACEBACK = """Traceback (most recent call last):
  File "/app/qworker/execution.py", line 88, in run
    result = await handler(payload, job)
  File "/app/mytasks.py", line 31, in send
    await smtp.send_message(message)
ConnectionRefusedError: [Errno 111] Connect call failed ('10.0.0.25', 587)"""


def _job(jid: int, queue: str, task: str, status: str, *, attempts: int = 1, max_attempts: int = 3,
         worker: str | None = None, created: float = 60, error: str | None = None,
         payload: Any = None, result: Any = None, started: float | None = None,
         finished: float | None = None) -> dict[str, Any]:
    return {
        "id": jid, "queue": queue, "task": task, "payload": payload, "priority": 0, "status": status,
        "attempts": attempts, "max_attempts": max_attempts, "run_at": iso(created),
        "timeout_s": 300.0, "unique_key": None, "lock_key": None, "worker_id": worker,
        "created_at": iso(created), "started_at": iso(started) if started is not None else None,
        "finished_at": iso(finished) if finished is not None else None, "last_error": error,
        "result": result,
    }


JOBS = [
    _job(1051, "default", "noop", "pending", attempts=0, created=2),
    _job(1050, "emails", "emails.send", "running", worker="worker-a1", created=4, started=3,
         payload={"to": "ada@example.com", "template": "welcome"}),
    _job(1049, "default", "reports.render", "assigned", attempts=0, worker="worker-a2", created=5),
    _job(1048, "webhooks", "webhooks.deliver", "pending", attempts=1, created=30,
         error="HTTPStatusError: 502 Bad Gateway from https://hooks.example.com/in"),
    _job(1047, "default", "echo", "succeeded", worker="worker-a2", created=40, started=39,
         finished=38, payload={"hello": "world"}, result={"hello": "world"}),
    _job(1046, "reports", "reports.render", "pending", attempts=0, created=912),
    _job(1045, "default", "noop", "cancelled", attempts=0, created=120),
    _job(1042, "emails", "emails.send", "dead", attempts=3, worker="worker-a1", created=600,
         started=200, finished=199, error=TRACEBACK,
         payload={"to": "grace@example.com", "template": "invoice", "invoice": 7}),
    _job(1040, "default", "sleep", "succeeded", worker="worker-b2", created=700, started=690,
         finished=688, payload=2, result=None),
]

JOB_ASSIGNMENTS = {
    1042: [
        {"worker_id": "worker-c2", "token": 88120, "assigned_at": iso(590), "started_at": iso(589),
         "finished_at": iso(588), "outcome": "failed"},
        {"worker_id": "worker-a2", "token": 88311, "assigned_at": iso(420), "started_at": iso(419),
         "finished_at": iso(418), "outcome": "failed"},
        {"worker_id": "worker-a1", "token": 88702, "assigned_at": iso(201), "started_at": iso(200),
         "finished_at": iso(199), "outcome": "dead"},
    ],
}

HEALTH_CHECKS = [
    {"id": 900 + i, "worker_id": "worker-a1", "checked_at": iso(0.8 + 2 * i),
     "status": "healthy" if i != 3 else "degraded", "cpu_percent": 41.5 - i, "memory_bytes": 182 * MB,
     "in_flight": 5 - i % 3, "loop_lag_ms": 1.2 + i, "details": {"reasons": [] if i != 3 else
                                                               ["cpu 91% over 90%"]}}
    for i in range(6)
]

ASSIGNMENTS = [
    {"job_id": 1050, "queue": "emails", "token": 88910, "assigned_at": iso(3.5), "started_at": iso(3),
     "finished_at": None, "outcome": None},
    {"job_id": 1042, "queue": "emails", "token": 88702, "assigned_at": iso(201), "started_at": iso(200),
     "finished_at": iso(199), "outcome": "dead"},
    {"job_id": 1039, "queue": "default", "token": 88650, "assigned_at": iso(240),
     "started_at": iso(239), "finished_at": iso(238), "outcome": "succeeded"},
]

LOCKS = [
    {"key": "qstack:leader:dispatcher", "owner": "scheduler-1@node-a", "worker_id": None,
     "token": 90311, "acquired_at": iso(3600), "expires_at": iso(-4.2), "live": True,
     "expires_in_s": 4.2},
    {"key": "qstack:leader:failover", "owner": "failover-1@node-b", "worker_id": None,
     "token": 90312, "acquired_at": iso(1800), "expires_at": iso(-3.1), "live": True,
     "expires_in_s": 3.1},
    {"key": "report:42", "owner": "worker-a1", "worker_id": "worker-a1", "token": 90420,
     "acquired_at": iso(18), "expires_at": iso(-12), "live": True, "expires_in_s": 12.0},
    {"key": "invoice:7", "owner": "worker-c2", "worker_id": "worker-c2", "token": 90101,
     "acquired_at": iso(160), "expires_at": iso(40), "live": False, "expires_in_s": -40.0},
]

EVENTS = [
    {"id": 14, "event_type": "worker_crashed", "failed_worker_id": "worker-c2",
     "target_worker_id": None, "jobs_recovered": 3, "jobs_dead": 1, "failover_at": iso(92),
     "detection_ms": 2140.0, "recovery_ms": 38.5,
     "details": {"rule": "worker_crashed", "reason": "worker worker-c2 died: session lock released",
                 "quarantined": [], "locks": ["invoice:7"]}},
    {"id": 13, "event_type": "held_back", "failed_worker_id": None, "target_worker_id": None,
     "jobs_recovered": 0, "jobs_dead": 0, "failover_at": iso(1500), "detection_ms": None,
     "recovery_ms": None,
     "details": {"workers": ["worker-a1", "worker-a2", "worker-b2"],
                 "note": "3 of 4 live workers silent at once: registry or network, not workers"}},
    {"id": 12, "event_type": "orphans_recovered", "failed_worker_id": "worker-c1",
     "target_worker_id": None, "jobs_recovered": 1, "jobs_dead": 0, "failover_at": iso(5300),
     "detection_ms": None, "recovery_ms": 12.0,
     "details": {"rule": "orphans", "reason": "worker worker-c1 stopped without handing its jobs back"}},
    {"id": 11, "event_type": "worker_unresponsive", "failed_worker_id": "worker-x9",
     "target_worker_id": None, "jobs_recovered": 6, "jobs_dead": 0, "failover_at": iso(80000),
     "detection_ms": 10450.0, "recovery_ms": 51.0,
     "details": {"rule": "worker_unresponsive", "reason": "worker worker-x9 died: no heartbeat for 10.4s"}},
]

ALERTS = [
    {"labels": {"alertname": "QstackWorkerDown", "severity": "critical"},
     "annotations": {"summary": "worker-c2 failed"}, "state": "firing", "activeAt": iso(90)},
    {"labels": {"alertname": "QueueBacklogHigh", "severity": "warning", "queue_name": "default"},
     "annotations": {"summary": "default has 1204 pending"}, "state": "firing", "activeAt": iso(300)},
]


def throughput() -> dict[str, Any]:
    """60 one-second buckets with a steady rate, a dip, and a few failures (deterministic)."""
    buckets = []
    for i in range(60):
        t = NOW - 60 + i
        done = 48 + round(9 * math.sin(i / 5)) - (30 if 30 <= i < 35 else 0)
        failed = 3 if i in (31, 32) else 1 if i % 11 == 4 else 0
        buckets.append({"t": t, "succeeded": done, "failed": failed, "dead": int(i == 47)})
    return {"seconds": 60, "buckets": buckets,
            "enqueue_to_start_ms": {"p50": 12.4, "p99": 184.0, "samples": 2541}}


SYSTEM = {"status": "degraded", "service": "registry", "checks": {
    "database": "ok", "workers": {"active": 3, "draining": 1, "stopped": 1, "failed": 1},
    "dispatcher_leader": "scheduler-1@node-a", "failover_leader": "failover-1@node-b"}}


class FixedClient:
    """An AdminApi with fixed data; `down` names services that fail as unreachable."""

    def __init__(self, *, prometheus: bool = True, workers: list[dict[str, Any]] | None = None,
                 jobs: list[dict[str, Any]] | None = None,
                 queues: list[dict[str, Any]] | None = None) -> None:
        self.urls = {"registry": "http://registry.test:8081", "scheduler": "http://scheduler.test:8082",
                     "failover": "http://failover.test:8083"}
        if prometheus:
            self.urls["prometheus"] = "http://prometheus.test:9090"
        self.data_workers = copy.deepcopy(WORKERS if workers is None else workers)
        self.data_queues = copy.deepcopy(QUEUES if queues is None else queues)
        self.data_jobs = copy.deepcopy(JOBS if jobs is None else jobs)
        self.data_locks = copy.deepcopy(LOCKS)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.down: set[str] = set()
        self.closed = False

    def _up(self, service: str) -> None:
        if service in self.down:
            err = ServiceUnavailable(f"{service}: {self.urls[service]} unreachable (connection refused)")
            err.service = service  # type: ignore[attr-defined]
            raise err

    def _act(self, op: str, service: str, *args: Any, **kwargs: Any) -> None:
        self._up(service)
        self.calls.append((op, args, kwargs))

    # registry
    async def system_health(self) -> dict[str, Any]:
        self._up("registry")
        return copy.deepcopy(SYSTEM)

    async def workers(self) -> list[dict[str, Any]]:
        self._up("registry")
        return copy.deepcopy(self.data_workers)

    def _worker(self, worker_id: str) -> dict[str, Any]:
        for w in self.data_workers:
            if w["id"] == worker_id:
                return w
        raise NotFound(f"registry: unknown worker {worker_id!r}")

    async def worker(self, worker_id: str) -> dict[str, Any]:
        self._up("registry")
        return {**copy.deepcopy(self._worker(worker_id)), "health_checks": copy.deepcopy(HEALTH_CHECKS),
                "assignments": copy.deepcopy(ASSIGNMENTS)}

    async def drain_worker(self, worker_id: str) -> dict[str, Any]:
        self._act("drain_worker", "registry", worker_id)
        w = self._worker(worker_id)
        if w["status"] != "active":
            raise Conflict(f"registry: worker {worker_id!r} is {w['status']}; cannot drain it")
        w.update(status="draining", requested="drain")
        return copy.deepcopy(w)

    async def stop_worker(self, worker_id: str) -> dict[str, Any]:
        self._act("stop_worker", "registry", worker_id)
        w = self._worker(worker_id)
        w.update(requested="stop")
        return copy.deepcopy(w)

    async def deregister_worker(self, worker_id: str) -> dict[str, Any]:
        self._act("deregister_worker", "registry", worker_id)
        w = self._worker(worker_id)
        w.update(status="stopped")
        return copy.deepcopy(w)

    # scheduler
    async def scheduler_health(self) -> dict[str, Any]:
        self._up("scheduler")
        return {"status": "ok", "service": "scheduler",
                "checks": {"database": "ok", "dispatcher_leader": True, "dispatcher_loop": "running"}}

    async def queues(self) -> list[dict[str, Any]]:
        self._up("scheduler")
        return copy.deepcopy(self.data_queues)

    async def pause_queue(self, queue: str) -> dict[str, Any]:
        self._act("pause_queue", "scheduler", queue)
        for q in self.data_queues:
            if q["queue"] == queue:
                q["paused"] = True
        return {"queue": queue, "paused": True}

    async def resume_queue(self, queue: str) -> dict[str, Any]:
        self._act("resume_queue", "scheduler", queue)
        for q in self.data_queues:
            if q["queue"] == queue:
                q["paused"] = False
        return {"queue": queue, "paused": False}

    async def throughput(self, seconds: int = 60) -> dict[str, Any] | None:
        self._up("scheduler")
        return throughput()

    async def jobs(self, *, queue: str | None = None, status: str | None = None,
                   task: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        self._up("scheduler")
        found = [j for j in self.data_jobs if (queue is None or j["queue"] == queue)
                 and (status is None or j["status"] == status) and (task is None or j["task"] == task)]
        return copy.deepcopy(found[:limit])

    def _job(self, job_id: int) -> dict[str, Any]:
        for j in self.data_jobs:
            if j["id"] == job_id:
                return j
        raise NotFound(f"scheduler: no job with id {job_id}")

    async def job(self, job_id: int) -> dict[str, Any]:
        self._up("scheduler")
        return {**copy.deepcopy(self._job(job_id)),
                "assignments": copy.deepcopy(JOB_ASSIGNMENTS.get(job_id, []))}

    async def retry_job(self, job_id: int) -> dict[str, Any]:
        self._act("retry_job", "scheduler", job_id)
        job = self._job(job_id)
        if job["status"] not in ("dead", "cancelled"):
            raise Conflict(f"scheduler: job {job_id} is {job['status']}")
        job.update(status="pending", max_attempts=max(job["max_attempts"], job["attempts"] + 1))
        return copy.deepcopy(job)

    async def cancel_job(self, job_id: int) -> dict[str, Any]:
        self._act("cancel_job", "scheduler", job_id)
        job = self._job(job_id)
        if job["status"] not in ("pending", "assigned", "cancelled"):
            raise Conflict(f"scheduler: job {job_id} is {job['status']}; only pending or assigned "
                           "jobs can be cancelled")
        job["status"] = "cancelled"
        return copy.deepcopy(job)

    async def bulk_retry(self, **selector: Any) -> dict[str, Any]:
        self._act("bulk_retry", "scheduler", **selector)
        return {"count": 0, "ids": []}

    async def bulk_cancel(self, **selector: Any) -> dict[str, Any]:
        self._act("bulk_cancel", "scheduler", **selector)
        return {"count": 0, "ids": []}

    async def locks(self) -> list[dict[str, Any]]:
        self._up("scheduler")
        return copy.deepcopy(self.data_locks)

    async def clear_stale_locks(self) -> dict[str, Any]:
        self._act("clear_stale_locks", "scheduler")
        stale = [lk["key"] for lk in self.data_locks if not lk["live"]]
        self.data_locks = [lk for lk in self.data_locks if lk["live"]]
        return {"cleared": len(stale), "keys": stale}

    # failover
    async def failover_health(self) -> dict[str, Any]:
        self._up("failover")
        return {"status": "ok", "service": "failover",
                "checks": {"failover_leader": True, "database": "ok", "last_pass_age_s": 0.4}}

    async def failover_events(self, limit: int = 100) -> list[dict[str, Any]]:
        self._up("failover")
        return copy.deepcopy(EVENTS[:limit])

    async def recover(self, force: bool = False) -> dict[str, Any]:
        self._act("recover", "failover", force=force)
        return {"declared_dead": [], "jobs_recovered": 0, "jobs_dead": 0, "quarantined": [],
                "timed_out": 0, "orphans": [], "stale_locks": [], "held_back": [], "note": None}

    # prometheus
    async def alerts(self) -> list[dict[str, Any]] | None:
        if "prometheus" not in self.urls:
            return None
        self._up("prometheus")
        return copy.deepcopy(ALERTS)

    async def aclose(self) -> None:
        self.closed = True


def make_app(client: FixedClient | None = None, clock: Any = clock, **options: Any) -> Any:
    """A QtuiApp on fixed data at a fixed time, refreshed only when a test says so."""
    from qtui.app import QtuiApp

    options.setdefault("context_name", "local")
    options.setdefault("live", False)
    return QtuiApp(client or FixedClient(), clock=clock, **options)


async def settle(pilot: Any) -> None:
    """Until every worker (refresh, detail loads they trigger, actions) is done and shown."""
    for _ in range(10):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in pilot.app.workers):
            break
    await pilot.pause()


async def refresh(pilot: Any) -> None:
    """One refresh now, waited for."""
    pilot.app.refresh_data(force=True)
    await settle(pilot)
