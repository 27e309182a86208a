"""The worker's HTTP side: /health and /metrics, with the Worker run in cleanup_ctx."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

import qworker.builtin  # noqa: F401  (registers the built-in tasks)
from qshared.config import Settings
from qshared.http import json_response, make_app, metrics_handler
from qshared.metrics import track_pool
from qshared.storage import open_storage
from qworker.runner import Worker

WORKER = web.AppKey("worker", Worker)


@dataclass(frozen=True, slots=True)
class Options:
    """What `qworker start` was told, over the settings."""

    queues: list[str]
    concurrency: int
    prefetch: int
    app_module: str | None = None


def load_user_tasks(module: str | None) -> None:
    """Import the module that registers the user's tasks (`--app my.tasks`)."""
    if module:
        importlib.import_module(module)


async def health(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    checks: dict[str, object] = {"worker_id": worker.id, "status": worker.status}
    ok = worker.registered.is_set() and worker.status in ("active", "draining")
    try:
        await worker.storage.ping()
        checks["database"] = "ok"
    except Exception as exc:  # /health reports, it does not raise
        checks["database"] = f"failing: {exc}"
        ok = False
    lag = worker.watch.current_lag()
    checks["loop_lag_ms"] = round(lag * 1000, 1)
    hb = worker._heartbeat
    if hb is not None and hb.last_ok is not None:
        checks["heartbeat_age_s"] = round(time.monotonic() - hb.last_ok, 2)
    body = {"status": "ok" if ok else "failing", "service": "worker", "checks": checks}
    return json_response(body, 200 if ok else 503)


async def wake(request: web.Request) -> web.Response:
    """Push wake-up (used where the database has no LISTEN/NOTIFY)."""
    request.app[WORKER]._wake.set()
    return json_response({"ok": True})


def create_app(settings: Settings, options: Options, stop: asyncio.Event) -> web.Application:
    """The worker's app; `stop` is set when the worker must exit (signal or stop command)."""
    load_user_tasks(options.app_module)
    app = make_app(settings.qstack_token)

    async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
        storage = await open_storage(
            settings.dsn, pool_size=min(settings.db_pool_size, 4 + options.concurrency),
            max_idle=settings.db_max_idle_time, durable=False,
        )
        track_pool(storage)
        worker = Worker(
            settings, storage, queues=options.queues, concurrency=options.concurrency,
            prefetch=options.prefetch, request_exit=stop.set,
        )
        app[WORKER] = worker
        yield
        try:
            await worker.shutdown(settings.worker_grace_period)
        finally:
            await storage.close()

    app.cleanup_ctx.append(worker_ctx)
    app.add_routes([
        web.get(settings.health_check_endpoint, health),
        web.get("/metrics", metrics_handler),
        web.post("/admin/wake", wake),
    ])
    return app
