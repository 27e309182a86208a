"""Storage contract: distributed locks with fencing tokens."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from qshared.storage.base import Storage


async def test_a_live_lock_has_one_owner(storage: Storage) -> None:
    got = await storage.acquire_lock("leader", "svc-a", 30)
    assert got is not None
    token, expires_at = got
    now = await storage.db_now()
    assert now + timedelta(seconds=29) < expires_at <= now + timedelta(seconds=31)
    assert await storage.acquire_lock("leader", "svc-b", 30) is None
    assert await storage.acquire_lock("leader", "svc-b", 30, worker_id="w9") is None
    [lock] = await storage.list_locks()
    assert (lock["lock_key"], lock["owner"], lock["token"], lock["live"]) == (
        "leader", "svc-a", token, True
    )


async def test_the_owner_reacquires_with_a_larger_token(storage: Storage) -> None:
    first, _ = await storage.acquire_lock("leader", "svc-a", 30)
    second, _ = await storage.acquire_lock("leader", "svc-a", 30)
    assert second > first
    # the old token is fenced off
    assert await storage.renew_lock("leader", "svc-a", first, 30) is None
    assert await storage.release_lock("leader", "svc-a", first) is False
    assert await storage.renew_lock("leader", "svc-a", second, 30) is not None


async def test_an_expired_lock_goes_to_the_next_owner(storage: Storage) -> None:
    first, _ = await storage.acquire_lock("job:42", "w1", 1.0, worker_id="w1")
    assert await storage.acquire_lock("job:42", "w2", 10) is None
    await asyncio.sleep(1.1)
    second, _ = await storage.acquire_lock("job:42", "w2", 10, worker_id="w2")
    assert second > first
    # the former holder's lease is gone
    assert await storage.renew_lock("job:42", "w1", first, 10) is None
    assert await storage.release_lock("job:42", "w1", first) is False
    [lock] = await storage.list_locks()
    assert (lock["owner"], lock["worker_id"], lock["token"]) == ("w2", "w2", second)


async def test_tokens_strictly_increase_across_keys(storage: Storage) -> None:
    tokens = []
    for i in range(6):
        got = await storage.acquire_lock(f"k{i % 3}", f"o{i}", 0.01 if i < 3 else 30)
        if i < 3:
            await asyncio.sleep(0.02)
        assert got is not None
        tokens.append(got[0])
    assert tokens == sorted(tokens) and len(set(tokens)) == 6


async def test_renew_extends_a_live_lease_only(storage: Storage) -> None:
    token, expires = await storage.acquire_lock("leader", "svc-a", 5)
    renewed = await storage.renew_lock("leader", "svc-a", token, 60)
    assert renewed is not None
    assert renewed[0] == token and renewed[1] > expires + timedelta(seconds=50)
    assert await storage.renew_lock("leader", "svc-b", token, 60) is None
    assert await storage.renew_lock("leader", "svc-a", token + 1, 60) is None
    assert await storage.renew_lock("missing", "svc-a", token, 60) is None

    short, _ = await storage.acquire_lock("brief", "svc-a", 0.2)
    await asyncio.sleep(0.3)
    assert await storage.renew_lock("brief", "svc-a", short, 60) is None


async def test_release_needs_owner_and_token(storage: Storage) -> None:
    token, _ = await storage.acquire_lock("leader", "svc-a", 30)
    assert await storage.release_lock("leader", "svc-b", token) is False
    assert await storage.release_lock("leader", "svc-a", token - 1) is False
    assert len(await storage.list_locks()) == 1
    assert await storage.release_lock("leader", "svc-a", token) is True
    assert await storage.release_lock("leader", "svc-a", token) is False
    assert await storage.list_locks() == []
    # free again for anyone
    assert await storage.acquire_lock("leader", "svc-b", 30) is not None


async def test_list_locks_shows_liveness_and_time_left(storage: Storage) -> None:
    await storage.acquire_lock("b-live", "svc", 60, worker_id="w1")
    await storage.acquire_lock("a-expired", "svc", 0.05)
    await asyncio.sleep(0.1)
    locks = await storage.list_locks()
    assert [lock["lock_key"] for lock in locks] == ["a-expired", "b-live"]
    expired, live = locks
    assert expired["live"] is False and expired["expires_in_s"] < 0
    assert live["live"] is True and 55 < live["expires_in_s"] <= 60
    assert (live["owner"], live["worker_id"]) == ("svc", "w1")
    assert live["acquired_at"] < live["expires_at"]


async def test_concurrent_acquirers_get_one_lease(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.acquire_lock("contended", f"owner-{i}", 30) for i in range(5))
    )
    winners = [i for i, got in enumerate(results) if got is not None]
    assert len(winners) == 1
    [lock] = await storage.list_locks()
    assert (lock["owner"], lock["token"]) == (f"owner-{winners[0]}", results[winners[0]][0])
