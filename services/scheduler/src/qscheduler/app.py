"""The scheduler application: enqueue API, dispatcher, queue statistics and controls."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from qscheduler import locks, views
from qscheduler.dispatch import Dispatcher
from qscheduler.system_metrics import SystemMetrics
from qscheduler.views import DISPATCHER, SETTINGS, STORAGE, SYSTEM_METRICS
from qshared.config import Settings
from qshared.http import (
    loop_context,
    make_app,
    metrics_handler,
    openapi_handler,
    owner_id,
    storage_context,
)

# The specification scrapes /admin/metrics every 60 s and the services every 15-30 s: at most
# one computation per 10 s, shared by all replicas, keeps the database out of the scrape's way.
SYSTEM_METRICS_TTL = 10.0


def create_app(settings: Settings) -> web.Application:
    """The scheduler's app: storage and the dispatcher loop live in cleanup_ctx."""
    app = make_app(settings.qstack_token)
    app[SETTINGS] = settings
    owner = owner_id("scheduler")
    dispatcher_ctx = loop_context(DISPATCHER, lambda app: Dispatcher(
        app[STORAGE], owner=owner, leader_ttl=settings.qstack_leader_ttl,
        heartbeat_ttl=settings.worker_registration_ttl, poll=settings.qstack_dispatch_poll,
        batch=settings.qstack_dispatch_batch, token=settings.qstack_token,
    ))

    async def system_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SYSTEM_METRICS] = SystemMetrics(app[STORAGE], ttl=SYSTEM_METRICS_TTL)
        yield

    app.cleanup_ctx.extend([storage_context(STORAGE, settings), locks.waiters_ctx,
                            system_metrics_ctx, dispatcher_ctx])
    app.add_routes([
        web.post("/api/v1/jobs", views.enqueue),
        web.post("/api/v1/jobs/batch", views.enqueue_batch),
        web.get("/api/v1/jobs/{job_id}", views.get_job),
        web.post("/api/v1/jobs/{job_id}/cancel", views.cancel_job),
        web.post("/api/v1/jobs/{job_id}/retry", views.retry_job),
        web.get("/api/v1/queues", views.list_queues),
        web.post("/api/v1/queues/{queue}/pause", views.pause_queue),
        web.post("/api/v1/queues/{queue}/resume", views.resume_queue),
        web.get("/admin/queue/jobs", views.list_jobs),
        web.post("/admin/queue/jobs/retry", views.retry_jobs),
        web.post("/admin/queue/jobs/cancel", views.cancel_jobs),
        web.get("/admin/queue/stats", views.stats),
        web.get("/admin/queue/throughput", views.throughput),
        web.post("/api/v1/locks/{key}", locks.acquire),
        web.post("/api/v1/locks/{key}/renew", locks.renew),
        web.post("/api/v1/locks/{key}/release", locks.release),
        web.get("/api/v1/locks/{key}", locks.get_lock),
        web.get("/admin/queue/locks", locks.list_locks),
        web.post("/admin/queue/locks/clear-stale", locks.clear_stale),
        web.get(settings.health_check_endpoint, views.health),
        web.get("/metrics", metrics_handler),
        web.get("/admin/metrics", views.admin_metrics),
        web.get("/openapi.json", openapi_handler("scheduler")),
    ])
    return app
