"""The failover watcher's retention schedule on a real database: it runs only while this
replica holds the leader lease, and a run that fails (the database away) is reported and
retried at the next interval instead of ending the loop."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY
from raw_sql import raw_sql

from qfailover.retention import Policy, Retention
from qfailover.watcher import LEADER_KEY
from qshared.leases import Lease
from qshared.storage import Storage, open_storage

POLICY = Policy(interval_s=0.2, health_checks_days=1, failover_events_days=1, jobs_days=1,
                dead_jobs_days=1)


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("qstack_retention_runs_total", {"result": result}) or 0.0


async def until(check, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_runs_only_as_leader_and_retries_after_a_failed_run(storage: Storage, backend: str,
                                                                   db_url: str) -> None:
    broken = await open_storage(db_url, pool_size=1)
    await broken.close()  # every statement on it fails, as with the database away
    lease = Lease(storage, LEADER_KEY, "test-replica", ttl=5)
    keeper = Retention(broken, POLICY, lease)
    stop = asyncio.Event()
    loop = asyncio.create_task(keeper.run(stop))
    lease_task = None
    try:
        await asyncio.sleep(0.6)
        assert keeper.last_run is None and keeper.next_run_in() is None  # not the leader

        failed_before = runs("failed")
        lease_task = asyncio.create_task(lease.run(stop))
        await until(lambda: keeper.last_run is not None, what="a run once leader")
        report = keeper.last_run
        assert report["trigger"] == "schedule" and report["error"]
        assert report["deleted"] == dict.fromkeys(report["deleted"], 0)
        await until(lambda: runs("failed") >= failed_before + 2, what="a retried run")
        assert not loop.done()

        # the database is back: the next run deletes the old rows
        event = (await storage.record_failover_event("held_back", None, {}))["id"]
        async with raw_sql(backend, db_url) as sql:
            await sql.age("failover_events", "failover_at", [event], 2 * 86400)
        deleted_before = REGISTRY.get_sample_value("qstack_retention_deleted_total",
                                                   {"table": "failover_events"})
        keeper.storage = storage
        await until(lambda: keeper.last_run["error"] is None, what="a run that works")
        assert await storage.failover_events() == []
        assert REGISTRY.get_sample_value("qstack_retention_deleted_total",
                                         {"table": "failover_events"}) == deleted_before + 1
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
        if lease_task is not None:
            await asyncio.wait_for(lease_task, 5)
