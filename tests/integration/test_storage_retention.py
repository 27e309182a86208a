"""Storage contract: retention clean-ups (health checks, failover events, finished jobs,
orphaned assignments): exactly the old rows go, live work is never touched, batches loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from raw_sql import RawSql, raw_sql

from qshared.errors import ValidationFailed
from qshared.storage.base import Outcome, Storage

HEALTHY = {"status": "healthy", "cpu_percent": 1.0, "memory_bytes": 1, "in_flight": 0,
           "loop_lag_ms": 0.1}


@pytest.fixture
async def sql(backend: str, db_url: str) -> AsyncIterator[RawSql]:
    """A raw connection on the test's schema, to plant old rows and to look at the tables."""
    async with raw_sql(backend, db_url) as conn:
        yield conn


async def age(sql: RawSql, table: str, column: str, ids: Sequence[int], days: float) -> None:
    """Move `column` of the rows `ids` of `table` `days` into the past."""
    await sql.age(table, column, ids, days * 86400)


async def ids(sql: RawSql, table: str) -> set[int]:
    return {r["id"] for r in await sql.fetch(f"SELECT id FROM {table}")}


async def health_checks(storage: Storage, sql: RawSql, worker_id: str,
                        n: int) -> list[int]:
    """n fresh health checks of the worker; their ids, oldest first."""
    before = await ids(sql, "worker_health_checks")
    for _ in range(n):
        await storage.heartbeat(worker_id, HEALTHY)
    return sorted(await ids(sql, "worker_health_checks") - before)


async def finish(storage: Storage, outcome, job_id: int, status: str) -> None:
    now = time.time()
    applied = await storage.report([await outcome(job_id, status, started=now, finished=now)])
    assert applied == [(job_id, status)]


# -- health checks and failover events ----------------------------------------------------
async def test_cleanup_health_checks_deletes_exactly_the_rows_older_than_the_cutoff(
    storage: Storage, sql, add_worker
) -> None:
    await add_worker(id="w1")
    old, older, recent, *fresh = await health_checks(storage, sql, "w1", 6)
    await age(sql, "worker_health_checks", "checked_at", [old], 31)
    await age(sql, "worker_health_checks", "checked_at", [older], 400)
    await age(sql, "worker_health_checks", "checked_at", [recent], 29)
    degraded = await health_checks(storage, sql, "w1", 1)
    await sql.execute("UPDATE worker_health_checks SET status = 'unhealthy' WHERE id = $1",
                      degraded[0])
    await age(sql, "worker_health_checks", "checked_at", degraded, 60)

    assert await storage.cleanup_health_checks(30) == 3
    assert await ids(sql, "worker_health_checks") == {recent, *fresh}
    assert await storage.cleanup_health_checks(30) == 0
    # fractions of a day: 28 days and a half keeps nothing older
    assert await storage.cleanup_health_checks(28.5) == 1
    assert await ids(sql, "worker_health_checks") == set(fresh)
    # 0: every row up to now
    assert await storage.cleanup_health_checks(0) == 3
    assert await ids(sql, "worker_health_checks") == set()


async def test_cleanup_failover_events_deletes_exactly_the_old_ones(storage: Storage, sql) -> None:
    events = [(await storage.record_failover_event("held_back", None, {"n": i}))["id"]
              for i in range(5)]
    await age(sql, "failover_events", "failover_at", events[:2], 91)
    await age(sql, "failover_events", "failover_at", events[2:3], 89.9)
    assert await storage.cleanup_failover_events(90) == 2
    assert [e["id"] for e in await storage.failover_events()] == events[:1:-1]
    assert await storage.cleanup_failover_events(90) == 0
    # seconds-old rows: a few seconds as a fraction of a day
    await age(sql, "failover_events", "failover_at", events[3:4], 10 / 86400)
    assert await storage.cleanup_failover_events(5 / 86400) == 2  # the 89.9-day and 10-s rows
    assert await ids(sql, "failover_events") == {events[4]}


@pytest.mark.parametrize("days", [-1, -0.001, float("nan"), float("inf"), "30", True, None,
                                  36501])
async def test_bad_days_are_refused_and_nothing_is_deleted(storage: Storage, sql, days) -> None:
    [event] = [(await storage.record_failover_event("held_back", None, {}))["id"]]
    await age(sql, "failover_events", "failover_at", [event], 1000)
    for clean in (storage.cleanup_health_checks, storage.cleanup_failover_events,
                  storage.cleanup_finished_jobs):
        with pytest.raises(ValidationFailed, match="days"):
            await clean(days)
    assert await ids(sql, "failover_events") == {event}


async def test_deletes_loop_over_batches(storage: Storage, sql, add_worker) -> None:
    await add_worker(id="w1")
    checks = await health_checks(storage, sql, "w1", 23)
    await age(sql, "worker_health_checks", "checked_at", checks[:20], 2)
    events = [(await storage.record_failover_event("held_back", None, {}))["id"]
              for _ in range(12)]
    await age(sql, "failover_events", "failover_at", events[:10], 2)
    # 20 = 4 full batches of 5 and an empty one; 10 = 3 + 3 + 3 + 1
    assert await storage.cleanup_health_checks(1, batch=5) == 20
    assert await ids(sql, "worker_health_checks") == set(checks[20:])
    assert await storage.cleanup_failover_events(1, batch=3) == 10
    assert await ids(sql, "failover_events") == set(events[10:])


# -- finished jobs ----------------------------------------------------------------------
async def test_cleanup_finished_jobs_never_touches_unfinished_jobs_and_takes_the_assignments(
    storage: Storage, sql, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", concurrency=20)
    done_old, done_new, dead_old, dead_new, to_cancel, assigned, running = [
        e.id for e in await storage.enqueue([make_job() for _ in range(7)])]
    assert await storage.cancel_job(to_cancel)
    await assign("w1")
    await finish(storage, outcome, done_old, "succeeded")
    await finish(storage, outcome, done_new, "succeeded")
    await finish(storage, outcome, dead_old, "dead")
    await finish(storage, outcome, dead_new, "dead")
    token = (await storage.get_job(running))["token"]
    assert await storage.mark_running([(running, token, time.time())]) == {running}
    [pending] = [e.id for e in await storage.enqueue([make_job(delay_s=3600)])]
    old = [done_old, dead_old, to_cancel, assigned, running, pending]
    await age(sql, "jobs", "created_at", old, 10)
    # an unfinished job with an old finished_at (as a retried one had) is still not finished
    await age(sql, "jobs", "finished_at", old, 9)
    keep_assignments = {a["id"] for j in (done_new, dead_old, dead_new, assigned, running)
                        for a in await storage.job_assignments(j)}
    assert len(keep_assignments) == 5

    assert await storage.cleanup_finished_jobs(7) == 2  # succeeded and cancelled by default
    left = await ids(sql, "jobs")
    assert left == {done_new, dead_old, dead_new, assigned, running, pending}
    assert await storage.job_assignments(done_old) == []
    assert await ids(sql, "job_assignments") == keep_assignments

    assert await storage.cleanup_finished_jobs(7, ["dead"]) == 1
    assert await ids(sql, "jobs") == left - {dead_old}
    assert await storage.cleanup_finished_jobs(7, ["succeeded", "dead", "cancelled"]) == 0
    statuses = {r["id"]: r["status"] for r in await sql.fetch("SELECT id, status FROM jobs")}
    assert statuses == {done_new: "succeeded", dead_new: "dead", assigned: "assigned",
                        running: "running", pending: "pending"}
    # the live ones still run to the end
    assert await storage.report([await outcome(running, "succeeded", started=time.time(),
                                               finished=time.time())]) == [(running, "succeeded")]


async def test_cleanup_finished_jobs_refuses_unfinished_states(storage: Storage, sql,
                                                               make_job) -> None:
    [job] = [e.id for e in await storage.enqueue([make_job()])]
    assert await storage.cancel_job(job)
    await age(sql, "jobs", "created_at", [job], 3)
    await age(sql, "jobs", "finished_at", [job], 2)
    for statuses, bad in ((["pending"], "'pending'"), (["cancelled", "running"], "'running'"),
                          (["bogus"], "'bogus'")):
        with pytest.raises(ValidationFailed, match=bad):
            await storage.cleanup_finished_jobs(1, statuses)
    assert await ids(sql, "jobs") == {job}
    assert await storage.cleanup_finished_jobs(1, []) == 0
    assert await storage.cleanup_finished_jobs(1, ["cancelled", "cancelled"]) == 1


async def test_cleanup_finished_jobs_walks_past_many_batches(
    storage: Storage, sql, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", concurrency=100)
    jobs = [e.id for e in await storage.enqueue([make_job() for _ in range(30)])]
    await assign("w1")
    for job_id in jobs:
        await finish(storage, outcome, job_id, "succeeded")
    # unfinished jobs among the old ones, and new ones after them
    [waiting] = [e.id for e in await storage.enqueue([make_job(delay_s=3600)])]
    fresh = [e.id for e in await storage.enqueue([make_job(delay_s=3600) for _ in range(3)])]
    await age(sql, "jobs", "created_at", [*jobs, waiting], 3)
    await age(sql, "jobs", "finished_at", jobs[:25], 2)

    assert await storage.cleanup_finished_jobs(1, batch=4) == 25
    assert await ids(sql, "jobs") == {*jobs[25:], waiting, *fresh}
    assert {r["job_id"] for r in await sql.fetch("SELECT job_id FROM job_assignments")} == set(
        jobs[25:])


async def test_a_job_retried_meanwhile_is_not_deleted(
    storage: Storage, sql, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    [job] = [e.id for e in await storage.enqueue([make_job(max_attempts=1)])]
    await assign("w1")
    await finish(storage, outcome, job, "dead")
    await age(sql, "jobs", "created_at", [job], 40)
    await age(sql, "jobs", "finished_at", [job], 40)
    assert (await storage.retry_job(job))["status"] == "pending"
    assert await storage.cleanup_finished_jobs(30, ["dead"]) == 0
    assert (await storage.get_job(job))["status"] == "pending"


# -- orphaned assignments -----------------------------------------------------------------
async def test_orphaned_assignments_keeps_live_ones_closes_stale_ones_and_deletes_gone_ones(
    storage: Storage, sql, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", concurrency=20)
    await add_worker(id="w2", concurrency=20)
    (live_assigned, live_running, finished_behind, requeued_behind, reassigned, gone_open,
     gone_closed, done) = [e.id for e in await storage.enqueue([make_job() for _ in range(8)])]
    await assign("w1")
    token = (await storage.get_job(live_running))["token"]
    assert await storage.mark_running([(live_running, token, time.time())]) == {live_running}
    await finish(storage, outcome, gone_closed, "succeeded")
    await finish(storage, outcome, done, "succeeded")
    # The job moved on while its assignment row stayed open (a write from an older version,
    # a crash between two statements): finished, put back to pending, assigned again.
    await sql.execute(f"UPDATE jobs SET status = 'succeeded', finished_at = {sql.now} WHERE id = $1",
                      finished_behind)
    await sql.execute(f"UPDATE jobs SET status = 'pending', worker_id = NULL WHERE {sql.in_list('id', 1)}",
                      [requeued_behind, reassigned])
    [(_, w)] = await storage.dispatch(["w2"], {"default": 10},
                                      lambda jobs: [(reassigned, "w2")])
    assert w == "w2"
    # The jobs of two rows are gone (deleted by hand, say).
    await sql.execute(f"DELETE FROM jobs WHERE {sql.in_list('id', 1)}", [gone_open, gone_closed])
    # An outcome without a finish time is closed already: it stays as it is.
    await sql.execute("UPDATE job_assignments SET outcome = 'succeeded' WHERE job_id = $1",
                      done)
    await sql.execute("UPDATE job_assignments SET finished_at = NULL WHERE job_id = $1", done)
    before = {r["id"]: r for r in await sql.fetch("SELECT * FROM job_assignments")}

    assert await storage.cleanup_orphaned_assignments() == {"deleted": 2, "closed": 3}
    after = {r["id"]: r for r in await sql.fetch("SELECT * FROM job_assignments")}
    by_job: dict[int, list[dict]] = {}
    for row in sorted(after.values(), key=lambda r: r["id"]):
        by_job.setdefault(row["job_id"], []).append(row)
    assert gone_open not in by_job and gone_closed not in by_job
    for job in (finished_behind, requeued_behind):
        [row] = by_job[job]
        assert row["outcome"] == "orphaned" and row["finished_at"] is not None
    stale, live = by_job[reassigned]
    assert (stale["worker_id"], stale["outcome"]) == ("w1", "orphaned")
    assert (live["worker_id"], live["outcome"], live["finished_at"]) == ("w2", None, None)
    for job in (live_assigned, live_running, done):
        [row] = by_job[job]
        assert row == before[row["id"]]
    assert await storage.cleanup_orphaned_assignments() == {"deleted": 0, "closed": 0}
    # the live ones finish normally
    await finish(storage, outcome, live_running, "succeeded")
    await finish(storage, outcome, reassigned, "succeeded")
    assert [a["outcome"] for a in await storage.job_assignments(reassigned)] == [
        "orphaned", "succeeded"]


async def test_orphaned_assignments_loop_over_batches(
    storage: Storage, sql, make_job, add_worker, assign
) -> None:
    await add_worker(id="w1", concurrency=100)
    jobs = [e.id for e in await storage.enqueue([make_job() for _ in range(40)])]
    await assign("w1")
    await sql.execute(f"DELETE FROM jobs WHERE {sql.in_list('id', 1)}", jobs[:17])
    await sql.execute(f"UPDATE jobs SET status = 'pending', worker_id = NULL WHERE {sql.in_list('id', 1)}",
                      jobs[17:28])
    assert await storage.cleanup_orphaned_assignments(batch=4) == {"deleted": 17, "closed": 11}
    rows = await sql.fetch("SELECT job_id, outcome FROM job_assignments ORDER BY job_id")
    assert [r["job_id"] for r in rows] == jobs[17:]
    assert [r["outcome"] for r in rows] == ["orphaned"] * 11 + [None] * 12


async def test_orphaned_assignments_never_closes_a_live_one_while_work_goes_on(
    storage: Storage, sql, make_job, add_worker, assign
) -> None:
    """Dispatch passes, starts, outcomes and hand-backs race the clean-up; every open row of
    a job assigned or running under its token must come through untouched."""
    workers = ["w1", "w2"]
    for w in workers:
        await add_worker(id=w, concurrency=50)
    stop = asyncio.Event()
    swept = 0

    async def sweep() -> None:
        nonlocal swept
        while not stop.is_set():
            assert await storage.cleanup_orphaned_assignments(batch=3) == {"deleted": 0,
                                                                           "closed": 0}
            swept += 1

    async def work(worker_id: str) -> None:
        for round_ in range(15):
            await storage.enqueue([make_job() for _ in range(10)])
            got = await assign(worker_id, limit=10)
            claimed = await storage.claim_assigned(worker_id, [])
            tokens = {a.id: a.token for a in claimed}
            await storage.mark_running([(j, tokens[j], time.time()) for j in got[::2]
                                        if j in tokens])
            done = [Outcome(j, tokens[j], "succeeded", started=time.time(),
                            finished=time.time()) for j in got[::2] if j in tokens]
            await storage.report(done)
            if round_ % 3 == 0:
                await storage.hand_back(worker_id)

    sweeper = asyncio.create_task(sweep())
    try:
        await asyncio.gather(*(work(w) for w in workers))
    finally:
        stop.set()
        await sweeper
    assert swept > 0
    assert await sql.fetchval("SELECT count(*) FROM job_assignments WHERE outcome = 'orphaned'") == 0
    # every open row is a live one, and every live job has its open row
    open_rows = await sql.fetch(
        "SELECT ja.job_id, ja.token, j.token AS job_token, j.status FROM job_assignments ja"
        " JOIN jobs j ON j.id = ja.job_id WHERE ja.outcome IS NULL")
    assert open_rows and all(r["token"] == r["job_token"] and r["status"] in ("assigned",
                                                                              "running")
                             for r in open_rows)
    live = await sql.fetchval("SELECT count(*) FROM jobs WHERE status IN ('assigned', 'running')")
    assert live == len(open_rows)
