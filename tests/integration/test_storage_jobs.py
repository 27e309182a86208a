"""Storage contract: enqueue, reading jobs, queue statistics and cancelling."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from qshared.storage.base import Storage


async def test_enqueue_returns_new_ids_in_submission_order(storage: Storage, make_job) -> None:
    out = await storage.enqueue([make_job(task_name=f"t{i}") for i in range(5)])
    assert [e.created for e in out] == [True] * 5
    ids = [e.id for e in out]
    assert ids == sorted(ids) and len(set(ids)) == 5
    for i, job_id in enumerate(ids):
        job = await storage.get_job(job_id)
        assert job is not None and job["task_name"] == f"t{i}"
    assert await storage.enqueue([]) == []


async def test_enqueue_stores_every_field(storage: Storage, make_job) -> None:
    [e] = await storage.enqueue([make_job(
        queue_name="emails", task_name="send", payload={"to": ["a@b.c"], "n": 1.5, "ok": None},
        priority=7, max_attempts=5, timeout=12.5, unique_key="u-1", lock_key="l-1",
    )])
    job = await storage.get_job(e.id)
    assert job is not None
    assert (job["id"], job["queue_name"], job["task_name"]) == (e.id, "emails", "send")
    assert job["payload"] == {"to": ["a@b.c"], "n": 1.5, "ok": None}
    assert (job["priority"], job["max_attempts"], job["timeout"]) == (7, 5, 12.5)
    assert (job["unique_key"], job["lock_key"]) == ("u-1", "l-1")
    assert (job["status"], job["attempts"], job["worker_id"]) == ("pending", 0, None)
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["last_error"] is None and job["result"] is None
    assert abs(job["run_at"] - job["created_at"]) < timedelta(seconds=1)
    assert await storage.get_job(e.id + 1000) is None


async def test_enqueue_with_a_delay_sets_run_at_ahead(storage: Storage, make_job) -> None:
    [e] = await storage.enqueue([make_job(delay_s=120)])
    job = await storage.get_job(e.id)
    assert job is not None
    ahead = job["run_at"] - job["created_at"]
    assert timedelta(seconds=119) < ahead < timedelta(seconds=125)
    due_in = await storage.next_due_in()
    assert due_in is not None and 119 < due_in < 125


async def test_next_due_in_is_the_earliest_future_run_at(storage: Storage, make_job) -> None:
    assert await storage.next_due_in() is None
    await storage.enqueue([make_job()])
    await asyncio.sleep(0.05)  # due more than 10 ms ago: not "next"
    assert await storage.next_due_in() is None
    _late, early = await storage.enqueue([make_job(delay_s=600), make_job(delay_s=60)])
    job = await storage.get_job(early.id)
    due_in = await storage.next_due_in()
    expected = (job["run_at"] - await storage.db_now()).total_seconds()
    assert due_in is not None and abs(due_in - expected) < 0.5 and 59 < due_in <= 60


async def test_unique_key_dedupes_across_calls(storage: Storage, make_job) -> None:
    [first] = await storage.enqueue([make_job(unique_key="report:2024-01")])
    [again] = await storage.enqueue([make_job(unique_key="report:2024-01", task_name="other")])
    assert first.created and not again.created
    assert again.id == first.id
    jobs = await storage.list_jobs(queue=None, status=None, task=None, before_id=None, limit=10)
    assert [j["id"] for j in jobs] == [first.id]
    assert jobs[0]["task_name"] == "noop"  # the first submission wins


async def test_unique_key_dedupes_within_one_batch(storage: Storage, make_job) -> None:
    a, b, c, d = await storage.enqueue([
        make_job(unique_key="k"), make_job(), make_job(unique_key="k"), make_job(unique_key="m"),
    ])
    assert [x.created for x in (a, b, c, d)] == [True, True, False, True]
    assert c.id == a.id
    assert len({a.id, b.id, d.id}) == 3
    jobs = await storage.list_jobs(queue=None, status=None, task=None, before_id=None, limit=10)
    assert len(jobs) == 3


async def test_jobs_without_unique_key_are_never_deduped(storage: Storage, make_job) -> None:
    out = await storage.enqueue([make_job(unique_key=None) for _ in range(3)])
    assert all(e.created for e in out) and len({e.id for e in out}) == 3


async def test_list_jobs_filters_newest_first(storage: Storage, make_job) -> None:
    ids = [e.id for e in await storage.enqueue([
        make_job(queue_name="a", task_name="x"),
        make_job(queue_name="b", task_name="x"),
        make_job(queue_name="a", task_name="y"),
        make_job(queue_name="a", task_name="x"),
    ])]
    await storage.cancel_job(ids[3])

    async def listed(**filters) -> list[int]:
        args = {"queue": None, "status": None, "task": None, "before_id": None, "limit": 100}
        rows = await storage.list_jobs(**{**args, **filters})
        return [r["id"] for r in rows]

    assert await listed() == ids[::-1]
    assert await listed(queue="a") == [ids[3], ids[2], ids[0]]
    assert await listed(task="x") == [ids[3], ids[1], ids[0]]
    assert await listed(queue="a", task="x", status="pending") == [ids[0]]
    assert await listed(status="cancelled") == [ids[3]]
    assert await listed(limit=2) == [ids[3], ids[2]]
    assert await listed(before_id=ids[2], limit=2) == [ids[1], ids[0]]
    assert await listed(queue="nope") == []


async def test_queue_stats_counts_by_state(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", queues=["a", "b"], concurrency=10)
    await storage.enqueue([make_job(queue_name="a", priority=10) for _ in range(3)])
    await storage.enqueue([make_job(queue_name="a", delay_s=3600)])
    await storage.enqueue([make_job(queue_name="b")])
    running, failed = await assign("w1", queues=["a"], limit=2)
    [cancelled] = await storage.enqueue([make_job(queue_name="b")])
    await storage.cancel_job(cancelled.id)
    applied = await storage.report([
        await outcome(running, "running", started=0.0),
        await outcome(failed, "pending", error="boom", retry_in=0),
    ])
    assert sorted(applied) == sorted([(running, "running"), (failed, "pending")])
    await asyncio.sleep(0.05)

    stats = {s["queue_name"]: s for s in await storage.queue_stats()}
    assert list(stats) == ["a", "b"]
    a = stats["a"]
    # 1 untouched + 1 failed-and-due are pending; the delayed one is scheduled
    assert (a["pending"], a["scheduled"], a["assigned"], a["running"]) == (2, 1, 0, 1)
    assert (a["failed"], a["succeeded"], a["dead"], a["cancelled"]) == (1, 0, 0, 0)
    assert 0.05 <= a["oldest_pending_age_s"] < 60
    b = stats["b"]
    assert (b["pending"], b["scheduled"], b["cancelled"], b["failed"]) == (1, 0, 1, 0)


async def test_queue_stats_oldest_pending_age_ignores_future_jobs(
    storage: Storage, make_job
) -> None:
    await storage.enqueue([make_job(queue_name="later", delay_s=600)])
    [s] = await storage.queue_stats()
    assert (s["queue_name"], s["pending"], s["scheduled"]) == ("later", 0, 1)
    assert s["oldest_pending_age_s"] == 0


async def test_cancel_pending_job(storage: Storage, make_job) -> None:
    [e] = await storage.enqueue([make_job()])
    assert await storage.cancel_job(e.id) is True
    job = await storage.get_job(e.id)
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert await storage.cancel_job(e.id) is False  # already cancelled
    assert await storage.cancel_job(e.id + 1000) is False  # no such job


async def test_cancel_assigned_job_closes_its_assignment(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job()])
    assert await assign("w1") == [e.id]
    stale = await outcome(e.id, "running", started=0.0)
    assert await storage.cancel_job(e.id) is True
    job = await storage.get_job(e.id)
    assert (job["status"], job["worker_id"]) == ("cancelled", None)
    [a] = await storage.job_assignments(e.id)
    assert a["outcome"] == "cancelled" and a["finished_at"] is not None
    # the worker's late start report cannot revive it
    assert await storage.report([stale]) == []
    assert (await storage.get_job(e.id))["status"] == "cancelled"
    assert await storage.claim_assigned("w1", []) == []


async def test_cancel_refuses_started_and_finished_jobs(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    running, done = [e.id for e in await storage.enqueue([make_job(), make_job()])]
    await assign("w1")
    await storage.report([await outcome(running, "running", started=1.0)])
    await storage.report([await outcome(done, "succeeded", started=1.0, finished=2.0)])
    assert await storage.cancel_job(running) is False
    assert await storage.cancel_job(done) is False
    assert (await storage.get_job(running))["status"] == "running"
    assert (await storage.get_job(done))["status"] == "succeeded"


async def test_concurrent_enqueues_of_one_unique_key_agree(storage: Storage, make_job) -> None:
    results = await asyncio.gather(
        *(storage.enqueue([make_job(unique_key="once", payload=i)]) for i in range(5))
    )
    outs = [out for [out] in results]
    assert len({o.id for o in outs}) == 1
    assert sum(o.created for o in outs) == 1
