"""Storage contract: worker registration, heartbeats with health checks, control requests."""

from __future__ import annotations

import asyncio

from qshared.storage.base import Storage

HEALTH = {
    "status": "degraded", "cpu_percent": 91.5, "memory_bytes": 123_456_789,
    "in_flight": 3, "loop_lag_ms": 12.5, "details": {"reason": "cpu"},
}


async def test_register_worker_returns_an_active_row(storage: Storage, make_worker) -> None:
    spec = make_worker(id="w1", hostname="node-1", pid=4242, queues=["default", "emails"],
                       concurrency=8, prefetch=16, version="1.2.3",
                       admin_url="http://10.0.0.5:9100")
    row = await storage.register_worker(spec)
    assert (row["id"], row["hostname"], row["pid"]) == ("w1", "node-1", 4242)
    assert row["queues"].split(",") == ["default", "emails"]
    assert (row["concurrency"], row["prefetch"], row["version"]) == (8, 16, "1.2.3")
    assert (row["admin_url"], row["status"], row["requested"]) == (
        "http://10.0.0.5:9100", "active", None
    )
    assert row["started_at"] is not None and row["last_heartbeat_at"] is not None
    assert await storage.get_worker("w1") == row
    assert await storage.get_worker("nobody") is None


async def test_register_again_revives_a_stopped_worker(
    storage: Storage, make_worker
) -> None:
    await storage.register_worker(make_worker(id="w1", pid=1))
    await storage.request_worker("w1", "stop")
    await storage.set_worker_status("w1", "stopped")
    row = await storage.register_worker(make_worker(id="w1", pid=2, queues=["b"]))
    assert (row["status"], row["requested"], row["pid"], row["queues"]) == (
        "active", None, 2, "b"
    )
    assert [w["id"] for w in await storage.list_workers()] == ["w1"]


async def test_heartbeat_refreshes_and_stores_a_health_check(
    storage: Storage, add_worker
) -> None:
    first = await add_worker(id="w1")
    await asyncio.sleep(0.05)
    reply = await storage.heartbeat("w1", HEALTH)
    assert (reply["id"], reply["status"], reply["requested"]) == ("w1", "active", None)
    row = await storage.get_worker("w1")
    assert row["last_heartbeat_at"] > first["last_heartbeat_at"]
    [check] = await storage.recent_health_checks("w1", 10)
    assert (check["worker_id"], check["status"], check["cpu_percent"]) == ("w1", "degraded", 91.5)
    assert (check["memory_bytes"], check["in_flight"], check["loop_lag_ms"]) == (123_456_789, 3, 12.5)
    assert check["details"] == {"reason": "cpu"} and check["checked_at"] is not None

    assert await storage.heartbeat("w1", None) is not None  # no health: no new row
    assert len(await storage.recent_health_checks("w1", 10)) == 1


async def test_recent_health_checks_newest_first_and_limited(
    storage: Storage, add_worker
) -> None:
    await add_worker(id="w1")
    for status in ("healthy", "degraded", "unhealthy"):
        await storage.heartbeat("w1", {"status": status})
        await asyncio.sleep(0.01)
    checks = await storage.recent_health_checks("w1", 2)
    assert [c["status"] for c in checks] == ["unhealthy", "degraded"]
    assert await storage.recent_health_checks("other", 5) == []


async def test_heartbeat_of_unknown_or_stopped_worker_is_refused(
    storage: Storage, add_worker
) -> None:
    assert await storage.heartbeat("ghost", HEALTH) is None
    await add_worker(id="w1")
    await storage.set_worker_status("w1", "stopped")
    assert await storage.heartbeat("w1", HEALTH) is None
    assert await storage.recent_health_checks("w1", 5) == []
    assert await storage.recent_health_checks("ghost", 5) == []


async def test_drain_request_sets_draining_and_reaches_the_heartbeat(
    storage: Storage, add_worker
) -> None:
    await add_worker(id="w1")
    row = await storage.request_worker("w1", "drain")
    assert (row["status"], row["requested"]) == ("draining", "drain")
    reply = await storage.heartbeat("w1", {"status": "healthy"})
    assert (reply["status"], reply["requested"]) == ("draining", "drain")
    assert await storage.request_worker("ghost", "drain") is None


async def test_stop_request_keeps_status_until_the_worker_stops(
    storage: Storage, add_worker
) -> None:
    await add_worker(id="w1")
    row = await storage.request_worker("w1", "stop")
    assert (row["status"], row["requested"]) == ("active", "stop")
    assert (await storage.heartbeat("w1", None))["requested"] == "stop"
    stopped = await storage.set_worker_status("w1", "stopped")
    assert (stopped["status"], stopped["requested"]) == ("stopped", None)
    # a stopped worker takes no more requests
    assert await storage.request_worker("w1", "drain") is None
    assert (await storage.get_worker("w1"))["status"] == "stopped"


async def test_set_worker_status(storage: Storage, add_worker) -> None:
    await add_worker(id="w1")
    row = await storage.set_worker_status("w1", "failed", "recover")
    assert (row["id"], row["status"], row["requested"]) == ("w1", "failed", "recover")
    assert await storage.set_worker_status("ghost", "stopped") is None


async def test_list_workers_with_age_in_flight_and_latest_health(
    storage: Storage, make_job, add_worker, assign
) -> None:
    await add_worker(id="w1")
    await add_worker(id="w2")
    await add_worker(id="w3")
    await storage.set_worker_status("w3", "stopped")
    await storage.enqueue([make_job(), make_job()])
    await assign("w1")
    await storage.heartbeat("w1", {"status": "healthy", "cpu_percent": 5.0})
    await asyncio.sleep(0.01)
    await storage.heartbeat("w1", {"status": "unhealthy", "cpu_percent": 99.0})

    rows = {w["id"]: w for w in await storage.list_workers()}
    assert list(rows) == ["w1", "w2", "w3"]
    w1, w2 = rows["w1"], rows["w2"]
    assert (w1["in_flight"], w1["health"], w1["cpu_percent"]) == (2, "unhealthy", 99.0)
    assert (w2["in_flight"], w2["health"]) == (0, None)
    assert all(0 <= w["heartbeat_age_s"] < 30 for w in rows.values())
    assert [w["id"] for w in await storage.list_workers("active")] == ["w1", "w2"]
    assert [w["id"] for w in await storage.list_workers("stopped")] == ["w3"]
    assert await storage.list_workers("draining") == []
