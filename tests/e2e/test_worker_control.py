"""Operator control through heartbeat replies, health-check rows, and the async client."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from e2e_helpers import wait_until
from stack_fixtures import on_each_database

from qshared.client import AsyncClient, Client, job_body

pytestmark = [pytest.mark.e2e, on_each_database]


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=2, concurrency=2)


def worker_ids(stack, db):
    pids = {name: s.proc.pid for name, s in stack.services.items() if s.kind == "worker"}
    rows = {r["pid"]: r["id"] for r in db.fetch("SELECT id, pid FROM queue_workers")}
    return {name: rows[pid] for name, pid in pids.items()}


def test_health_check_rows_are_written_at_the_interval(stack, db):
    ids = worker_ids(stack, db)

    def enough():
        rows = db.fetch("SELECT worker_id, count(*) AS n FROM worker_health_checks GROUP BY 1")
        return len(rows) == 2 and all(r["n"] >= 2 for r in rows)

    wait_until(enough, timeout=15, interval=0.5, what="two health checks per worker")
    rows = db.fetch("SELECT * FROM worker_health_checks WHERE worker_id = $1 ORDER BY checked_at",
                    ids["worker-1"])
    assert {r["status"] for r in rows} <= {"healthy", "degraded", "unhealthy"}
    assert all(r["memory_bytes"] > 10_000_000 for r in rows)  # a real RSS, not a placeholder
    gaps = [(b["checked_at"] - a["checked_at"]).total_seconds() for a, b in itertools.pairwise(rows)]
    assert all(1.0 <= g <= 4.0 for g in gaps), gaps  # WORKER_HEALTH_CHECK_INTERVAL = 2 s


def test_drain_then_stop_reach_the_worker_through_its_heartbeat(stack, db):
    ids = worker_ids(stack, db)
    drained, other = ids["worker-1"], ids["worker-2"]
    with Client(stack.registry_url, stack.token) as registry:
        row = registry.request("POST", f"/api/v1/workers/{drained}/drain")
        assert row["status"] == "draining"
        # the worker acts on its next heartbeat: it stops asking for the request
        wait_until(lambda: db.value("SELECT requested FROM queue_workers WHERE id = $1",
                                    drained) is None, timeout=10, what="drain to be delivered")
    with stack.client() as client:
        jobs = client.enqueue_many([job_body("noop") for _ in range(50)])
        for job_id in jobs:
            assert client.wait(job_id, timeout=30)["status"] == "succeeded"
    ran_on = {r["worker_id"] for r in db.fetch(
        f"SELECT worker_id FROM jobs WHERE {db.in_list('id', 1)}", jobs)}
    assert ran_on == {other}
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", drained) == "draining"

    with Client(stack.registry_url, stack.token) as registry:
        registry.request("POST", f"/api/v1/workers/{drained}/stop")
    proc = stack.services["worker-1"].proc
    assert proc.wait(timeout=30) == 0
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", drained) == "stopped"
    with Client(stack.registry_url, stack.token) as registry:
        from qshared.errors import Conflict

        with pytest.raises(Conflict, match="stopped"):
            registry.request("POST", f"/api/v1/workers/{drained}/drain")


def test_async_client_round_trip(stack):
    async def go():
        async with AsyncClient(stack.scheduler_url, stack.token) as client:
            job_id = await client.enqueue("echo", {"n": 7}, queue="emails")
            ids = await client.enqueue_many([job_body("echo", i) for i in range(5)])
            done = await client.wait(job_id, timeout=20)
            results = [(await client.wait(i, timeout=20))["result"] for i in ids]
            later = await client.enqueue("noop", delay_s=30)
            cancelled = await client.cancel(later)
            stats = {q["queue"]: q for q in await client.stats()}
            return done, results, cancelled, stats

    done, results, cancelled, stats = asyncio.run(go())
    assert done["status"] == "succeeded" and done["result"] == {"n": 7}
    assert done["queue"] == "emails"
    assert results == [0, 1, 2, 3, 4]
    assert cancelled["status"] == "cancelled"
    assert stats["emails"]["succeeded"] >= 1 and stats["default"]["cancelled"] >= 1


def test_admin_metrics_gives_the_system_gauges(stack):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    url = stack.scheduler_url + "/admin/metrics"
    assert httpx.get(url, timeout=10).status_code == 401  # an admin route
    with stack.client() as client:
        client.enqueue("noop", delay_s=600, queue="reports")  # stays scheduled
    resp = httpx.get(url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=10)
    assert resp.status_code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(resp.text) for s in f.samples}
    assert samples[("queue_length", (("queue_name", "reports"),))] == 0
    assert samples[("qstack_queue_jobs", (("queue_name", "reports"), ("state", "scheduled")))] >= 1
    assert ("qstack_oldest_pending_age_seconds", (("queue_name", "reports"),)) in samples
    assert samples[("qstack_workers", (("status", "stopped"),))] >= 1  # worker-1 was stopped
    assert samples[("qstack_workers", (("status", "active"),))] >= 1


def test_system_health_names_leaders_and_workers(stack):
    import httpx

    body = httpx.get(stack.registry_url + "/health", timeout=10).json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["dispatcher_leader"].startswith("scheduler:")
    assert body["checks"]["failover_leader"].startswith("failover:")
    assert body["checks"]["workers"]["active"] >= 1
    assert body["status"] == "ok"
    sched = httpx.get(stack.scheduler_url + "/health", timeout=10).json()
    assert sched["checks"]["dispatcher_loop"] == "running"
