"""The dispatcher's passes on each backend: when a pass asks for another at once, and the
wake-up it pushes to the workers where the database cannot notify them (MySQL)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from tooling import free_port

from qscheduler.dispatch import Dispatcher, WakePusher
from qshared.storage import Storage


def dispatcher(storage: Storage, batch: int = 100) -> Dispatcher:
    return Dispatcher(storage, owner="test", leader_ttl=5, heartbeat_ttl=60, poll=1.0,
                      batch=batch)


async def test_a_pass_that_took_every_due_job_asks_for_no_other(
    storage: Storage, make_job, add_worker
) -> None:
    """Jobs that come one at a time: each pass takes what is due, then waits for a wake-up
    instead of a second pass that would find nothing."""
    await add_worker(id="w1", concurrency=4, prefetch=4)
    d = dispatcher(storage)
    try:
        for n in (1, 3):
            await storage.enqueue([make_job() for _ in range(n)])
            assert await d.dispatch_once() == (n, False)
        assert await d.dispatch_once() == (0, False)
    finally:
        await d.close()


async def test_a_pass_that_filled_its_batch_asks_for_another(
    storage: Storage, make_job, add_worker
) -> None:
    await add_worker(id="w1", concurrency=10, prefetch=0)
    await storage.enqueue([make_job() for _ in range(5)])
    d = dispatcher(storage, batch=2)
    try:
        assert [await d.dispatch_once() for _ in range(4)] == [
            (2, True), (2, True), (1, False), (0, False)]
    finally:
        await d.close()


async def test_a_queue_that_took_all_its_room_asks_for_another_pass(
    storage: Storage, make_job, add_worker
) -> None:
    """The room ran out with jobs still due: the next pass finds no worker with room and
    asks for none (a finished job wakes the dispatcher)."""
    await add_worker(id="w1", queues=["a"], concurrency=2, prefetch=1)
    await add_worker(id="w2", queues=["b"], concurrency=4, prefetch=0)
    await storage.enqueue([make_job(queue_name="a") for _ in range(5)]
                          + [make_job(queue_name="b")])
    d = dispatcher(storage)
    try:
        assert await d.dispatch_once() == (4, True)  # 3 for a (its room), 1 for b
        assert await d.dispatch_once() == (0, False)
        pending = await storage.list_jobs(queue="a", status="pending", task=None,
                                          before_id=None, limit=10)
        assert len(pending) == 2
    finally:
        await d.close()


async def test_the_wake_up_push_reaches_the_workers_admin_url_with_the_token() -> None:
    port = free_port()
    seen: list[str | None] = []
    got = asyncio.Event()

    async def wake(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/admin/wake", wake)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pusher = WakePusher("s3cret")
    try:
        pusher.push([f"http://127.0.0.1:{port}/"])
        await asyncio.wait_for(got.wait(), 5)
        assert seen == ["Bearer s3cret"]
        pusher.push(["http://127.0.0.1:1/"])  # refused: logged, nothing raised
        await asyncio.sleep(0.2)
    finally:
        await pusher.close()
        await runner.cleanup()

