"""HTTP handlers of the failover watcher: events, manual recovery, health."""

from __future__ import annotations

import time

from aiohttp import web

from qfailover.watcher import Watcher
from qshared.errors import StorageError, ValidationFailed
from qshared.http import json_response, read_model
from qshared.schemas import FailoverEventListOut, FailoverEventOut, RecoverIn, RecoverOut
from qshared.storage import Storage

STORAGE = web.AppKey("storage", Storage)
WATCHER = web.AppKey("watcher", Watcher)


async def events(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ValidationFailed(f"limit must be an integer, got {request.query['limit']!r}") from None
    if not 1 <= limit <= 10000:
        raise ValidationFailed(f"limit must be between 1 and 10000, got {limit}")
    rows = await request.app[STORAGE].failover_events(request.query.get("worker_id"), limit)
    return json_response(FailoverEventListOut(events=[FailoverEventOut(**r) for r in rows]))


async def _body(request: web.Request) -> RecoverIn:
    if not request.can_read_body:
        return RecoverIn()
    return await read_model(request, RecoverIn)


async def recover(request: web.Request) -> web.Response:
    """`worker failover-recovery [--force]`: one pass now (force skips the guards)."""
    body = await _body(request)
    report = await request.app[WATCHER].pass_once(force=body.force)
    return json_response(RecoverOut(**report))


async def cleanup_crashed(request: web.Request) -> web.Response:
    """`worker cleanup-crashed`: a pass that also takes jobs back from stopped workers."""
    report = await request.app[WATCHER].pass_once(force=False, orphans=True)
    return json_response(RecoverOut(**report))


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
