"""Storage contract: wake-ups pushed to subscribers."""

from __future__ import annotations

import asyncio
import secrets

from qshared.storage import DISPATCH_CHANNEL, worker_channel
from qshared.storage.base import Storage


async def test_enqueue_wakes_the_dispatch_channel(storage: Storage, make_job) -> None:
    woke = asyncio.Event()
    sub = await storage.subscribe(DISPATCH_CHANNEL, woke.set)
    try:
        await storage.enqueue([make_job()])
        await asyncio.wait_for(woke.wait(), timeout=1.0)
    finally:
        await sub.close()


async def test_dispatch_wakes_exactly_the_assigned_worker(
    storage: Storage, make_job, add_worker, assign
) -> None:
    # Worker ids are random per test, so no other test's traffic reaches these channels.
    me, other = f"wake-{secrets.token_hex(4)}", f"leave-{secrets.token_hex(4)}"
    await add_worker(id=me)
    await add_worker(id=other)
    mine, theirs = asyncio.Event(), asyncio.Event()
    sub_mine = await storage.subscribe(worker_channel(me), mine.set)
    sub_theirs = await storage.subscribe(worker_channel(other), theirs.set)
    try:
        await storage.enqueue([make_job()])
        assert len(await assign(me)) == 1
        await asyncio.wait_for(mine.wait(), timeout=1.0)
        await asyncio.sleep(0.2)
        assert not theirs.is_set()
    finally:
        await sub_mine.close()
        await sub_theirs.close()


async def test_a_closed_subscription_is_not_called(
    storage: Storage, make_job, add_worker, assign
) -> None:
    me = f"closing-{secrets.token_hex(4)}"
    await add_worker(id=me)
    calls = []
    sub = await storage.subscribe(worker_channel(me), lambda: calls.append(1))
    await sub.close()
    await storage.enqueue([make_job()])
    assert len(await assign(me)) == 1
    await asyncio.sleep(0.3)
    assert calls == []
