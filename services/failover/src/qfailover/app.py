"""The failover watcher application: detection and recovery loop, failover events, retention."""

from __future__ import annotations

from aiohttp import web

from qfailover import views
from qfailover.retention import Policy, Retention
from qfailover.views import RETENTION, STORAGE, WATCHER
from qfailover.watcher import Watcher
from qshared.config import Settings
from qshared.http import (
    loop_context,
    make_app,
    metrics_handler,
    openapi_handler,
    owner_id,
    storage_context,
)


def create_app(settings: Settings) -> web.Application:
    """The failover app: storage, the watcher loop and the retention schedule (which runs
    while the watcher holds the leader lease) live in cleanup_ctx."""
    app = make_app(settings.qstack_token)
    owner = owner_id("failover")
    watcher_ctx = loop_context(WATCHER, lambda app: Watcher(app[STORAGE], settings, owner))
    retention_ctx = loop_context(RETENTION, lambda app: Retention(
        app[STORAGE], Policy.from_settings(settings), app[WATCHER].lease))

    app.cleanup_ctx.extend([storage_context(STORAGE, settings), watcher_ctx, retention_ctx])
    app.add_routes([
        web.get("/admin/queue/failover", views.events),
        web.post("/admin/queue/failover/recover", views.recover),
        web.post("/admin/queue/failover/cleanup-crashed", views.cleanup_crashed),
        web.post("/admin/queue/failover/cleanup/health-checks", views.cleanup_health_checks),
        web.post("/admin/queue/failover/cleanup/failover-events", views.cleanup_failover_events),
        web.post("/admin/queue/failover/cleanup/orphaned-assignments",
                 views.cleanup_orphaned_assignments),
        web.post("/admin/queue/failover/cleanup/jobs", views.cleanup_jobs),
        web.get("/admin/queue/failover/retention", views.retention),
        web.post("/admin/queue/failover/retention/run", views.retention_run),
        web.get(settings.health_check_endpoint, views.health),
        web.get("/metrics", metrics_handler),
        web.get("/openapi.json", openapi_handler("failover")),
    ])
    return app
