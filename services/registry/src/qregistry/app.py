"""The registry application: worker registration, heartbeats, health checks."""

from __future__ import annotations

from aiohttp import web

from qregistry import views
from qregistry.views import SETTINGS, STORAGE
from qshared.config import Settings
from qshared.http import make_app, metrics_handler, openapi_handler, storage_context


def create_app(settings: Settings) -> web.Application:
    """The registry's app: storage opened and closed in cleanup_ctx."""
    app = make_app(settings.qstack_token)
    app[SETTINGS] = settings

    app.cleanup_ctx.append(storage_context(STORAGE, settings))
    app.add_routes([
        web.post("/api/v1/workers", views.register),
        web.get("/api/v1/workers", views.list_workers),
        web.get("/api/v1/workers/stats", views.worker_stats),
        web.get("/api/v1/workers/{worker_id}", views.get_worker),
        web.post("/api/v1/workers/{worker_id}/heartbeat", views.heartbeat),
        web.post("/api/v1/workers/{worker_id}/drain", views.drain),
        web.post("/api/v1/workers/{worker_id}/stop", views.stop),
        web.delete("/api/v1/workers/{worker_id}", views.deregister),
        web.get("/admin/queue/workers", views.list_workers),
        web.get("/admin/queue/workers/validate", views.validate_pool),
        web.get("/admin/queue/workers/resources", views.resource_stats),
        web.get("/admin/queue/workers/config", views.export_config),
        web.get(settings.health_check_endpoint, views.health),
        web.get("/metrics", metrics_handler),
        web.get("/openapi.json", openapi_handler("registry")),
    ])
    return app
