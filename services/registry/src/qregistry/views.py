"""HTTP handlers of the registry: parse, call storage, reply."""

from __future__ import annotations

from aiohttp import web

from qregistry import doctor, metrics
from qregistry.doctor import Limits
from qregistry.grading import grade
from qshared.config import Settings
from qshared.errors import Conflict, NotFound, ValidationFailed
from qshared.http import json_response, read_model
from qshared.leases import LEADER_ROLES, leader_key
from qshared.pool import config_skew
from qshared.schemas import (
    HeartbeatIn,
    HeartbeatOut,
    PoolConfigOut,
    PoolReportOut,
    PoolWorkerConfigOut,
    RegisteredOut,
    ResourceStatOut,
    ResourceStatsOut,
    WorkerAssignmentOut,
    WorkerIn,
    WorkerListOut,
    WorkerOut,
    WorkerStatsListOut,
    WorkerStatsOut,
)
from qshared.storage import Storage

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)

RECENT_ASSIGNMENTS = 20  # in a worker's detail
DEFAULT_MAX_CLOCK_SKEW_MS = 1000.0  # validate-pool: a worker's clock against the database's


def _worker_id(request: web.Request) -> str:
    return request.match_info["worker_id"]


async def register(request: web.Request) -> web.Response:
    body = await read_model(request, WorkerIn)
    settings = request.app[SETTINGS]
    row = await request.app[STORAGE].register_worker(body.model_dump())
    out = RegisteredOut(
        id=row["id"], status=row["status"],
        heartbeat_interval_s=settings.worker_health_check_interval,
        registration_ttl_s=settings.worker_registration_ttl,
    )
    return json_response(out, status=201)


async def heartbeat(request: web.Request) -> web.Response:
    body = await read_model(request, HeartbeatIn)
    worker_id = _worker_id(request)
    h = body.health
    status, reasons = grade(
        loop_lag_ms=h.loop_lag_ms, cpu_percent=h.cpu_percent,
        jobs_done=h.jobs_done_recent, jobs_failed=h.jobs_failed_recent,
    )
    details: dict[str, object] = {"reasons": reasons}
    if h.sent_at is not None:  # compared with checked_at (the database's clock) for skew
        details["sent_at"] = h.sent_at
    health = {**h.model_dump(), "status": status, "details": details}
    storage = request.app[STORAGE]
    row = await storage.heartbeat(worker_id, health)
    if row is None:
        known = await storage.get_worker(worker_id)
        if known is None:
            raise NotFound(f"unknown worker {worker_id!r}; register first")
        raise Conflict(f"worker {worker_id!r} is {known['status']}", code=f"worker_{known['status']}")
    metrics.HEALTH_CHECKS.labels(status=status).inc()
    if status == "unhealthy":
        metrics.HEALTH_CHECKS_FAILED.inc()
    commands = [row["requested"]] if row["requested"] in ("drain", "stop") else []
    return json_response(HeartbeatOut(status=row["status"], health=status, commands=commands))


async def deregister(request: web.Request) -> web.Response:
    """A failed worker stays failed: its row records what happened."""
    storage = request.app[STORAGE]
    worker_id = _worker_id(request)
    row = await storage.set_worker_status(worker_id, "stopped", from_states=("active", "draining"))
    if row is None:
        row = await storage.get_worker(worker_id)
        if row is None:
            raise NotFound(f"unknown worker {worker_id!r}")
    return json_response(WorkerOut.from_row(row))


async def _control(request: web.Request, what: str) -> web.Response:
    storage = request.app[STORAGE]
    worker_id = _worker_id(request)
    row = await storage.request_worker(worker_id, what)
    if row is None:
        known = await storage.get_worker(worker_id)
        if known is None:
            raise NotFound(f"unknown worker {worker_id!r}")
        raise Conflict(f"worker {worker_id!r} is {known['status']}; cannot {what} it")
    return json_response(WorkerOut.from_row(row))


async def drain(request: web.Request) -> web.Response:
    return await _control(request, "drain")


async def stop(request: web.Request) -> web.Response:
    return await _control(request, "stop")


async def list_workers(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in ("active", "draining", "stopped", "failed"):
        raise ValidationFailed(f"status must be active, draining, stopped or failed, got {status!r}")
    rows = await request.app[STORAGE].list_workers(status)
    return json_response(WorkerListOut(workers=[WorkerOut.from_row(r) for r in rows]))


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


async def validate_pool(request: web.Request) -> web.Response:
    """`worker validate-pool`: unserved queues, stale heartbeats, skew, lock leaks, leaders."""
    settings = request.app[SETTINGS]
    limits = Limits(
        ttl=settings.worker_registration_ttl, lock_grace=settings.qstack_lock_grace,
        max_clock_skew_ms=_number(request, "max_clock_skew_ms", DEFAULT_MAX_CLOCK_SKEW_MS,
                                  0, 3_600_000),
    )
    storage = request.app[STORAGE]
    workers = await storage.list_workers(None)
    queues = await storage.list_queues()
    locks = await storage.list_locks()
    found = doctor.diagnose(workers, queues, locks, limits)
    return json_response(PoolReportOut(**doctor.report(found, workers=len(workers),
                                                        queues=len(queues))))


async def resource_stats(request: web.Request) -> web.Response:
    """`worker resource-stats`: CPU, memory, load and loop lag per worker over a window."""
    seconds = _number(request, "seconds", 300, 1, 30 * 86400)
    rows = await request.app[STORAGE].resource_stats(seconds)
    out = []
    for r in rows:
        avg = r["in_flight_avg"]
        out.append(ResourceStatOut(**r, utilization=None if avg is None
                                   else round(avg / r["concurrency"], 4)))
    live = [r for r in out if r.status in ("active", "draining")]
    totals = {
        "workers": float(len(live)),
        "concurrency": float(sum(r.concurrency for r in live)),
        "cpu_last": sum(r.cpu_last or 0.0 for r in live),
        "memory_last": float(sum(r.memory_last or 0 for r in live)),
        "in_flight_avg": sum(r.in_flight_avg or 0.0 for r in live),
    }
    return json_response(ResourceStatsOut(seconds=seconds, workers=out, totals=totals))


async def export_config(request: web.Request) -> web.Response:
    """`worker export-config`: the live workers' registrations and pool-wide settings."""
    storage = request.app[STORAGE]
    everyone = request.query.get("all") in ("1", "true", "yes")
    rows = [r for r in await storage.list_workers(None)
            if everyone or r["status"] in doctor.LIVE_STATES]
    workers = [PoolWorkerConfigOut(**WorkerOut.from_row(r).model_dump()) for r in rows]
    queues: dict[str, list[str]] = {}
    for w in workers:
        for q in w.queues:
            queues.setdefault(q, []).append(w.id)
    skew = config_skew({w.id: w.config for w in workers})
    return json_response(PoolConfigOut(exported_at=await storage.db_now(), workers=workers,
                                       queues=dict(sorted(queues.items())), skew=skew))


async def get_worker(request: web.Request) -> web.Response:
    storage = request.app[STORAGE]
    worker_id = _worker_id(request)
    rows = [r for r in await storage.list_workers(None) if r["id"] == worker_id]
    if not rows:
        raise NotFound(f"unknown worker {worker_id!r}")
    checks = await storage.recent_health_checks(worker_id, 20)
    assignments = await storage.worker_assignments(worker_id, RECENT_ASSIGNMENTS)
    data = WorkerOut.from_row(rows[0]).model_dump(mode="json")
    data["health_checks"] = checks
    data["assignments"] = [WorkerAssignmentOut.from_row(a).model_dump(mode="json")
                           for a in assignments]
    return json_response(data)


async def worker_stats(request: web.Request) -> web.Response:
    rows = await request.app[STORAGE].worker_stats()
    return json_response(WorkerStatsListOut(workers=[WorkerStatsOut(**r) for r in rows]))


async def health(request: web.Request) -> web.Response:
    """The system's health (what the gateway's `/health` answers): the database, the
    scheduler's and the failover watcher's leaders, and the active workers.

    503 when the database is unreachable or no dispatcher leader holds its lease (nothing
    would be dispatched); 200 "degraded" without a failover leader or without active workers.
    """
    storage = request.app[STORAGE]
    checks: dict[str, object] = {}
    try:
        await storage.ping()
        checks["database"] = "ok"
        workers = await storage.list_workers(None)
        leases = {r["lock_key"]: r for r in await storage.list_locks() if r["live"]}
    except Exception as exc:  # /health reports, it does not raise
        checks["database"] = f"failing: {exc}"
        return json_response({"status": "failing", "service": "registry", "checks": checks}, 503)
    by_status: dict[str, int] = {}
    for w in workers:
        by_status[w["status"]] = by_status.get(w["status"], 0) + 1
    checks["workers"] = by_status
    for role in LEADER_ROLES:
        lease = leases.get(leader_key(role))
        checks[f"{role}_leader"] = lease["owner"] if lease else None
    status, code = "ok", 200
    if checks["failover_leader"] is None or not by_status.get("active"):
        status = "degraded"
    if checks["dispatcher_leader"] is None:
        status, code = "failing", 503
    return json_response({"status": status, "service": "registry", "checks": checks}, code)
