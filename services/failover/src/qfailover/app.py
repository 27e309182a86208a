"""The failover watcher application: detection and recovery loop, failover events."""

from __future__ import annotations

from aiohttp import web

from qfailover import views
from qfailover.views import STORAGE, WATCHER
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
    """The failover app: storage and the watcher loop live in cleanup_ctx."""
    app = make_app(settings.qstack_token)
    owner = owner_id("failover")
    watcher_ctx = loop_context(WATCHER, lambda app: Watcher(app[STORAGE], settings, owner))

    app.cleanup_ctx.extend([storage_context(STORAGE, settings), watcher_ctx])
    app.add_routes([
        web.get("/admin/queue/failover", views.events),
        web.post("/admin/queue/failover/recover", views.recover),
        web.post("/admin/queue/failover/cleanup-crashed", views.cleanup_crashed),
        web.get(settings.health_check_endpoint, views.health),
        web.get("/metrics", metrics_handler),
        web.get("/openapi.json", openapi_handler("failover")),
    ])
    return app
