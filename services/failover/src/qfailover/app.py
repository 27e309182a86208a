"""The failover watcher application: detection and recovery loop, failover events."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from qfailover import views
from qfailover.views import STORAGE, WATCHER
from qfailover.watcher import Watcher
from qshared.config import Settings
from qshared.http import make_app, metrics_handler, openapi_handler, storage_context


def create_app(settings: Settings) -> web.Application:
    """The failover app: storage and the watcher loop live in cleanup_ctx."""
    app = make_app(settings.qstack_token)
    owner = f"failover:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    async def watcher_ctx(app: web.Application) -> AsyncIterator[None]:
        watcher = Watcher(app[STORAGE], settings, owner)
        app[WATCHER] = watcher
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop), name="failover-watcher")
        yield
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
