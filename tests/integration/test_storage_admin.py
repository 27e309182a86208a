"""Storage contract: operator controls: queues (list, pause, resume), retry, bulk retry and
cancel, throughput, a worker's latest assignments."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta

from raw_sql import raw_sql

from qshared.storage import DISPATCH_CHANNEL
from qshared.storage.base import JobFilter, Storage
from qshared.storage.queries import load_queries


async def statuses(storage: Storage, ids) -> dict[int, str]:
    return {i: (await storage.get_job(i))["status"] for i in ids}


# -- queues -----------------------------------------------------------------------------
async def test_list_queues_has_the_stats_counts_and_the_paused_flag(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", queues=["a"])
    await storage.enqueue([make_job(queue_name="b"), make_job(queue_name="a"),
                           make_job(queue_name="a", delay_s=600)])
    [done] = await assign("w1", queues=["a"], limit=1)
    await storage.report([await outcome(done, "succeeded", started=1.0, finished=2.0)])
    await storage.set_queue_paused("b", True)
    await storage.set_queue_paused("empty", True)  # a queue without jobs, paused ahead

    queues = await storage.list_queues()
    assert [q["queue_name"] for q in queues] == ["a", "b", "empty"]
    stats = {s["queue_name"]: s for s in await storage.queue_stats()}
    for q in queues[:2]:
        stat = stats[q["queue_name"]]
        assert abs(q.pop("oldest_pending_age_s") - stat.pop("oldest_pending_age_s")) < 1
        assert {k: v for k, v in q.items() if k != "paused"} == stat
    assert [q["paused"] for q in queues] == [False, True, True]
    a = queues[0]
    assert (a["succeeded"], a["scheduled"], a["pending"]) == (1, 1, 0)
    empty = queues[2]
    assert all(empty[k] == 0 for k in ("pending", "scheduled", "assigned", "running",
                                       "succeeded", "failed", "dead", "cancelled"))
    assert empty["oldest_pending_age_s"] == 0.0
    assert queues[1]["pending"] == 1


async def test_pause_and_resume_are_idempotent_and_keep_the_first_pause_time(
    storage: Storage
) -> None:
    first = await storage.set_queue_paused("q", True)
    assert (first["queue_name"], first["paused"]) == ("q", True)
    assert first["paused_at"] is not None
    await asyncio.sleep(0.05)
    again = await storage.set_queue_paused("q", True)
    assert again["paused"] and again["paused_at"] == first["paused_at"]
    resumed = await storage.set_queue_paused("q", False)
    assert (resumed["paused"], resumed["paused_at"]) == (False, None)
    assert (await storage.set_queue_paused("q", False))["paused"] is False
    assert [(q["queue_name"], q["paused"]) for q in await storage.list_queues()] == [("q", False)]


async def test_a_paused_queue_is_not_dispatched_and_resume_wakes_the_dispatcher(
    storage: Storage, make_job, add_worker, assign
) -> None:
    await add_worker(id="w1", queues=["a", "b"], concurrency=10)
    a_ids = [e.id for e in await storage.enqueue([make_job(queue_name="a") for _ in range(3)])]
    b_ids = [e.id for e in await storage.enqueue([make_job(queue_name="b") for _ in range(2)])]
    await storage.set_queue_paused("a", True)
    assert sorted(await assign("w1", queues=["a", "b"])) == b_ids
    assert await assign("w1", queues=["a", "b"]) == []
    assert set((await statuses(storage, a_ids)).values()) == {"pending"}

    woke = asyncio.Event()
    sub = await storage.subscribe(DISPATCH_CHANNEL, woke.set)
    try:
        await storage.set_queue_paused("a", False)
        await asyncio.wait_for(woke.wait(), timeout=1.0)
    finally:
        await sub.close()
    assert sorted(await assign("w1", queues=["a", "b"])) == a_ids


async def test_pausing_leaves_assigned_jobs_with_their_worker(
    storage: Storage, make_job, add_worker, assign
) -> None:
    await add_worker(id="w1", queues=["a"])
    ids = [e.id for e in await storage.enqueue([make_job(queue_name="a") for _ in range(2)])]
    assert sorted(await assign("w1", queues=["a"])) == ids
    await storage.set_queue_paused("a", True)
    claimed = await storage.claim_assigned("w1", [])
    assert sorted(a.id for a in claimed) == ids
    assert await storage.mark_running([(a.id, a.token, time.time()) for a in claimed]) == set(ids)


# -- retry ------------------------------------------------------------------------------
async def _dead_job(storage: Storage, make_job, assign, outcome, **overrides) -> int:
    [e] = await storage.enqueue([make_job(max_attempts=1, **overrides)])
    assert await assign("w1") == [e.id]
    [(_, status)] = await storage.report([await outcome(e.id, "dead", started=1.0,
                                                        finished=2.0, error="boom")])
    assert status == "dead"
    return e.id


async def test_retry_of_a_dead_job_gives_it_one_more_attempt(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    job_id = await _dead_job(storage, make_job, assign, outcome, delay_s=0)
    woke = asyncio.Event()
    sub = await storage.subscribe(DISPATCH_CHANNEL, woke.set)
    try:
        job = await storage.retry_job(job_id)
        await asyncio.wait_for(woke.wait(), timeout=1.0)
    finally:
        await sub.close()
    assert job is not None and job == await storage.get_job(job_id)
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("pending", 1, 2)
    assert job["worker_id"] is None and job["finished_at"] is None
    assert job["last_error"] == "boom"  # kept: why it died the last time
    assert abs(job["run_at"] - await storage.db_now()) < timedelta(seconds=1)
    # it runs again: a second attempt, and a second assignment row
    assert await assign("w1") == [job_id]
    again = await storage.get_job(job_id)
    assert (again["status"], again["attempts"]) == ("assigned", 2)
    assert len(await storage.job_assignments(job_id)) == 2


async def test_retry_of_a_cancelled_job_keeps_unused_attempts(
    storage: Storage, make_job
) -> None:
    [e] = await storage.enqueue([make_job(max_attempts=3, delay_s=600)])
    assert await storage.cancel_job(e.id)
    job = await storage.retry_job(e.id)
    assert job is not None
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("pending", 0, 3)
    assert job["run_at"] <= await storage.db_now()  # due now, not in ten minutes


async def test_retry_refuses_other_states_and_unknown_ids(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    pending, assigned, running, succeeded = (e.id for e in await storage.enqueue(
        [make_job(), make_job(), make_job(), make_job()]))
    assert sorted(await assign("w1", limit=3)) == [pending, assigned, running]
    await storage.report([await outcome(running, "running", started=time.time())])
    await storage.report([await outcome(pending, "succeeded", started=1.0, finished=2.0)])
    before = {i: await storage.get_job(i) for i in (pending, assigned, running, succeeded)}
    for job_id in (pending, assigned, running, succeeded, succeeded + 1000):
        assert await storage.retry_job(job_id) is None
    assert {i: await storage.get_job(i) for i in before} == before


# -- bulk retry and cancel --------------------------------------------------------------
async def test_retry_jobs_by_filters_and_limit(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", queues=["default", "other"])
    dead = [await _dead_job(storage, make_job, assign, outcome) for _ in range(3)]
    dead_other_task = await _dead_job(storage, make_job, assign, outcome, task_name="t2")
    [c] = await storage.enqueue([make_job(delay_s=600)])
    assert await storage.cancel_job(c.id)
    [live] = await storage.enqueue([make_job(delay_s=600)])

    # nothing matches: no change
    assert await storage.retry_jobs(JobFilter(queue="nope"), 100) == []
    # by task and status
    assert await storage.retry_jobs(JobFilter(task="t2", status="dead"), 100) == [dead_other_task]
    # by ids: only the retryable ones, ascending
    assert await storage.retry_jobs(JobFilter(ids=[live.id, c.id, dead[2]]), 100) == [
        dead[2], c.id]
    # by queue, limited: oldest first
    assert await storage.retry_jobs(JobFilter(queue="default"), 1) == [dead[0]]
    assert await storage.retry_jobs(JobFilter(status="dead"), 100) == [dead[1]]
    jobs = {i: await storage.get_job(i) for i in (*dead, dead_other_task, c.id)}
    assert {j["status"] for j in jobs.values()} == {"pending"}
    assert all(jobs[i]["max_attempts"] == 2 for i in (*dead, dead_other_task))
    assert jobs[c.id]["max_attempts"] == 3
    assert (await storage.get_job(live.id))["run_at"] > await storage.db_now()  # untouched


async def test_cancel_jobs_acts_like_cancel_job(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    ids = [e.id for e in await storage.enqueue([make_job() for _ in range(4)])]
    assigned = await assign("w1", limit=2)
    assert assigned == ids[:2]
    await storage.report([await outcome(ids[1], "running", started=time.time())])
    [delayed] = await storage.enqueue([make_job(delay_s=600, task_name="later")])
    [other] = await storage.enqueue([make_job(queue_name="other")])

    assert await storage.cancel_jobs(JobFilter(status="pending", task="later"), 100) == [
        delayed.id]
    assert await storage.cancel_jobs(JobFilter(queue="default"), 2) == [ids[0], ids[2]]
    assert await storage.cancel_jobs(JobFilter(ids=ids), 100) == [ids[3]]
    states = await statuses(storage, [*ids, delayed.id, other.id])
    assert states == {ids[0]: "cancelled", ids[1]: "running", ids[2]: "cancelled",
                      ids[3]: "cancelled", delayed.id: "cancelled", other.id: "pending"}
    # the assigned job's assignment is closed as cancel_job closes it, and it cannot start
    [a] = await storage.job_assignments(ids[0])
    assert a["outcome"] == "cancelled" and a["finished_at"] is not None
    job = await storage.get_job(ids[0])
    assert job["worker_id"] is None and job["finished_at"] is not None
    assert await storage.mark_running([(ids[0], job["token"], time.time())]) == set()
    [r] = await storage.job_assignments(ids[1])
    assert r["outcome"] is None


async def test_cancel_jobs_skips_a_job_a_dispatch_pass_holds(
    storage: Storage, make_job, backend: str, db_url: str
) -> None:
    held, free = (e.id for e in await storage.enqueue([make_job(), make_job()]))
    async with raw_sql(backend, db_url) as sql:
        async with sql.transaction():  # what pick_pending does in a dispatch pass
            await sql.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", held)
            started = time.perf_counter()
            assert await storage.cancel_jobs(JobFilter(queue="default"), 100) == [free]
            assert time.perf_counter() - started < 1.0  # not waiting for the pass
    assert await statuses(storage, [held, free]) == {held: "pending", free: "cancelled"}
    assert await storage.cancel_jobs(JobFilter(queue="default"), 100) == [held]


async def _pick(sql, backend: str, q, limit: int = 10) -> list[int]:
    """A dispatch pass's picking statements, as each backend's dispatch() runs them."""
    if backend == "postgres":
        return [r["id"] for r in await sql.fetch(q["pick_pending"], ["default"], [limit])]
    due = await sql.fetch(q["pick_due"], {"queue": "default", "limit": limit})
    if not due:
        return []
    return [r["id"] for r in await sql.fetch(q["pick_pending"], {"ids": [r["id"] for r in due]})]


async def test_a_dispatch_pass_locks_only_the_due_jobs_it_picked(
    storage: Storage, make_job, backend: str, db_url: str
) -> None:
    """A delayed job the pass passed over stays free: cancelled, not skipped, and updated
    without waiting for the pass (on MariaDB a single locking scan of the dispatch index held
    every delayed job of the queue until the pass committed)."""
    q = load_queries(backend)
    due, later, later2 = (e.id for e in await storage.enqueue(
        [make_job(), make_job(delay_s=600), make_job(delay_s=600)]))
    async with raw_sql(backend, db_url) as sql:
        async with sql.transaction():
            assert await _pick(sql, backend, q) == [due]
            started = time.perf_counter()
            assert await storage.cancel_jobs(JobFilter(queue="default"), 100) == [later, later2]
            assert time.perf_counter() - started < 1.0
    assert await statuses(storage, [due, later, later2]) == {
        due: "pending", later: "cancelled", later2: "cancelled"}


async def test_a_cancel_that_waited_for_a_dispatch_pass_closes_the_assignment_it_wrote(
    storage: Storage, make_job, add_worker, backend: str, db_url: str
) -> None:
    """The cancel starts while a pass holds the job and goes on once the pass committed:
    the assignment row the pass wrote is closed too, not left open under a cancelled job."""
    q = load_queries(backend)
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job()])
    async with raw_sql(backend, db_url) as sql:
        async with sql.transaction():
            # the pass's statements, as each backend's dispatch() runs them
            if backend == "postgres":
                picked = await sql.fetch(q["pick_pending"], ["default"], [10])
            else:
                due = await sql.fetch(q["pick_due"], {"queue": "default", "limit": 10})
                picked = await sql.fetch(q["pick_pending"], {"ids": [r["id"] for r in due]})
            assert [r["id"] for r in picked] == [e.id]
            cancel = asyncio.create_task(storage.cancel_job(e.id))
            await asyncio.sleep(0.2)  # the cancel now waits for the row
            assert not cancel.done()
            if backend == "postgres":
                await sql.execute(q["assign"], [e.id], ["w1"])
            else:  # the token, the job, then its assignment row
                await sql.execute(q["next_tokens"], {"n": 1})
                await sql.execute(q["assign"], {"id": e.id, "worker_id": "w1", "back": 0})
                await sql.execute(q["insert_assignments"], {"ids": [e.id]})
        assert await cancel
    assert (await storage.get_job(e.id))["status"] == "cancelled"
    [a] = await storage.job_assignments(e.id)
    assert a["outcome"] == "cancelled" and a["finished_at"] is not None


async def test_cancel_jobs_racing_dispatch_leaves_every_job_consistent(
    storage: Storage, make_job, add_worker
) -> None:
    await add_worker(id="w1", concurrency=1000)
    ids = [e.id for e in await storage.enqueue([make_job() for _ in range(400)])]

    def chooser(jobs):
        return [(j.id, "w1") for j in jobs]

    async def dispatch_loop() -> int:
        n = 0
        for _ in range(40):
            n += len(await storage.dispatch(["w1"], {"default": 10}, chooser))
            await asyncio.sleep(0)
        return n

    async def cancel_loop() -> int:
        n = 0
        for _ in range(40):
            n += len(await storage.cancel_jobs(JobFilter(queue="default"), 7))
            await asyncio.sleep(0)
        return n

    await asyncio.gather(dispatch_loop(), cancel_loop())
    for job_id in ids:
        job = await storage.get_job(job_id)
        history = await storage.job_assignments(job_id)
        assert len(history) <= 1
        if job["status"] == "assigned":
            assert job["worker_id"] == "w1" and history[0]["outcome"] is None
        elif job["status"] == "cancelled":
            assert job["worker_id"] is None
            assert all(a["outcome"] == "cancelled" for a in history)
        else:
            assert job["status"] == "pending" and history == []


# -- throughput -------------------------------------------------------------------------
async def test_throughput_counts_outcomes_per_second_and_start_latency(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", concurrency=20)
    empty = await storage.throughput(5)
    assert len(empty["buckets"]) == 5
    assert empty["latency"] == {"p50": None, "p99": None, "samples": 0}

    ok = [e.id for e in await storage.enqueue([make_job() for _ in range(3)])]
    retry, dies, lost = (e.id for e in await storage.enqueue(
        [make_job(max_attempts=2), make_job(max_attempts=1), make_job(max_attempts=1)]))
    await asyncio.sleep(0.2)  # every job waits at least 200 ms before it starts
    assert len(await assign("w1")) == 6
    now = time.time()
    await storage.report([await outcome(i, "succeeded", started=now, finished=now) for i in ok]
                         + [await outcome(retry, "pending", started=now, finished=now,
                                          error="x", retry_in=600),
                            await outcome(dies, "dead", started=now, finished=now, error="x")])
    # a running job whose worker dies with its last attempt: dead, counted as such
    await storage.report([await outcome(lost, "running", started=now)])
    event = await storage.recover_worker("w1", reason="test", event_type="worker_dead",
                                         quarantine_after=3, details={})
    assert event is not None and (lost, "dead") in event["jobs"]

    got = await storage.throughput(60)
    buckets = got["buckets"]
    assert len(buckets) == 60
    assert all(b["t"] - a["t"] == 1.0 for a, b in itertools.pairwise(buckets))
    db_now = (await storage.db_now()).timestamp()
    assert buckets[-1]["t"] <= db_now < buckets[-1]["t"] + 1.5
    total = {k: sum(b[k] for b in buckets) for k in ("succeeded", "failed", "dead")}
    assert total == {"succeeded": 3, "failed": 1, "dead": 2}
    assert sum(1 for b in buckets if b["succeeded"]) == 1  # they all finished at once

    latency = got["latency"]
    assert latency["samples"] == 6  # every attempt that started has a start on record
    assert 200 <= latency["p50"] <= latency["p99"] < 10_000
    # a window that ended before they started sees none of them
    await asyncio.sleep(1.1)
    assert (await storage.throughput(1))["latency"]["samples"] == 0


# -- a worker's assignments -------------------------------------------------------------
async def test_worker_assignments_are_the_latest_newest_first(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", queues=["default", "mail"])
    await add_worker(id="w2")
    await storage.enqueue([make_job()])
    first = await assign("w1")
    [m] = await storage.enqueue([make_job(queue_name="mail")])
    second = await assign("w1", queues=["mail"])
    await storage.report([await outcome(m.id, "succeeded", started=1.0, finished=2.0)])
    await storage.enqueue([make_job()])
    await assign("w2")

    rows = await storage.worker_assignments("w1", 20)
    assert [r["job_id"] for r in rows] == second + first
    top = rows[0]
    assert (top["queue_name"], top["outcome"]) == ("mail", "succeeded")
    assert top["token"] == (await storage.get_job(m.id))["token"]
    assert top["started_at"] is not None and top["finished_at"] is not None
    assert rows[1]["outcome"] is None and rows[1]["finished_at"] is None
    assert [r["job_id"] for r in await storage.worker_assignments("w1", 1)] == second
    assert await storage.worker_assignments("nobody", 20) == []
