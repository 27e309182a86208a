"""HTTP handlers of the failover watcher: events, manual recovery, retention, health."""

from __future__ import annotations

import time
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from qfailover.retention import Retention
from qfailover.watcher import Watcher
from qshared.errors import StorageError, ValidationFailed
from qshared.http import json_response, read_model
from qshared.schemas import (
    CleanupDaysIn,
    CleanupJobsIn,
    CleanupJobsOut,
    CleanupOrphansIn,
    CleanupOrphansOut,
    CleanupOut,
    FailoverEventListOut,
    FailoverEventOut,
    RecoverIn,
    RecoverOut,
    RetentionOut,
    RetentionRunIn,
    RetentionRunOut,
)
from qshared.storage import Storage

STORAGE = web.AppKey("storage", Storage)
WATCHER = web.AppKey("watcher", Watcher)
RETENTION = web.AppKey("retention", Retention)

M = TypeVar("M", bound=BaseModel)


async def events(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ValidationFailed(f"limit must be an integer, got {request.query['limit']!r}") from None
    if not 1 <= limit <= 10000:
        raise ValidationFailed(f"limit must be between 1 and 10000, got {limit}")
    rows = await request.app[STORAGE].failover_events(request.query.get("worker_id"), limit)
    return json_response(FailoverEventListOut(events=[FailoverEventOut(**r) for r in rows]))


async def _optional(request: web.Request, model: type[M]) -> M:
    """A body that may be left out (no options): absent, it is the model's defaults."""
    if not request.can_read_body:
        return model()
    return await read_model(request, model)


async def recover(request: web.Request) -> web.Response:
    """`worker failover-recovery [--force]`: one pass now (force skips the guards)."""
    body = await _optional(request, RecoverIn)
    report = await request.app[WATCHER].pass_once(force=body.force)
    return json_response(RecoverOut(**report))


async def cleanup_crashed(request: web.Request) -> web.Response:
    """`worker cleanup-crashed`: a pass that also takes jobs back from stopped workers."""
    report = await request.app[WATCHER].pass_once(force=False, orphans=True)
    return json_response(RecoverOut(**report))


async def cleanup_health_checks(request: web.Request) -> web.Response:
    """`queue cleanup-health-checks --days N`."""
    body = await read_model(request, CleanupDaysIn)
    deleted = await request.app[RETENTION].health_checks(body.days)
    return json_response(CleanupOut(table="worker_health_checks", deleted=deleted,
                                    older_than_days=body.days))


async def cleanup_failover_events(request: web.Request) -> web.Response:
    """`queue cleanup-failover-events --days N`."""
    body = await read_model(request, CleanupDaysIn)
    deleted = await request.app[RETENTION].failover_events(body.days)
    return json_response(CleanupOut(table="failover_events", deleted=deleted,
                                    older_than_days=body.days))


async def cleanup_orphaned_assignments(request: web.Request) -> web.Response:
    """`queue cleanup-orphaned-assignments`."""
    await _optional(request, CleanupOrphansIn)
    result = await request.app[RETENTION].orphaned_assignments()
    return json_response(CleanupOrphansOut(table="job_assignments", **result))


async def cleanup_jobs(request: web.Request) -> web.Response:
    """`queue cleanup-jobs --days N [--status S ...]`."""
    body = await read_model(request, CleanupJobsIn)
    deleted = await request.app[RETENTION].finished_jobs(body.days, body.statuses)
    return json_response(CleanupJobsOut(table="jobs", deleted=deleted,
                                        older_than_days=body.days, statuses=body.statuses))


async def retention(request: web.Request) -> web.Response:
    """`queue retention`: the policy and this replica's last run."""
    keeper = request.app[RETENTION]
    return json_response(RetentionOut(
        policy=keeper.policy.as_dict(), scheduled=keeper.scheduled,
        next_run_in_s=keeper.next_run_in(), last_run=keeper.last_run,
    ))


async def retention_run(request: web.Request) -> web.Response:
    """`queue retention --run`: a whole run now; 503 when it failed part way."""
    await _optional(request, RetentionRunIn)
    report = await request.app[RETENTION].run_once("manual")
    if report["error"]:
        done = ", ".join(f"{n} {t}" for t, n in report["deleted"].items() if n) or "nothing"
        raise StorageError(f"retention run failed after deleting {done}: {report['error']}")
    return json_response(RetentionRunOut(**report))


async def health(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    checks: dict[str, object] = {"failover_leader": watcher.lease.is_leader}
    ok = True
    try:
        await request.app[STORAGE].ping()
        checks["database"] = "ok"
    except StorageError as exc:
        checks["database"] = f"failing: {exc}"
        ok = False
    if watcher.last_pass_at is not None:
        checks["last_pass_age_s"] = round(time.monotonic() - watcher.last_pass_at, 3)
    if watcher.last_note:
        checks["note"] = watcher.last_note
    body = {"status": "ok" if ok else "failing", "service": "failover", "checks": checks}
    return json_response(body, 200 if ok else 503)
