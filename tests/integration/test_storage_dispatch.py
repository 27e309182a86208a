"""Storage contract: worker slots, dispatch, claiming, and the guarded job transitions."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from raw_sql import raw_sql, rows_read

from qshared.storage.base import PendingJob, Storage
from qshared.storage.queries import load_queries


class Recorder:
    """A chooser that gives every offered job to one worker and remembers what it saw."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.seen: list[list[PendingJob]] = []

    def __call__(self, jobs: list[PendingJob]) -> list[tuple[int, str]]:
        self.seen.append(list(jobs))
        return [(j.id, self.worker_id) for j in jobs]


# -- worker_slots -----------------------------------------------------------------------
async def test_worker_slots_report_capacity_and_in_flight(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", queues=["a", "b"], concurrency=2, prefetch=3)
    await add_worker(id="w2", queues=["b"], concurrency=4)
    ids = [e.id for e in await storage.enqueue([make_job(queue_name="a") for _ in range(3)])]
    assert sorted(await assign("w1", queues=["a"])) == ids
    await storage.report([await outcome(ids[0], "running", started=time.time())])
    await storage.report([await outcome(ids[1], "succeeded", started=1.0, finished=2.0)])

    slots = {s.id: s for s in await storage.worker_slots(60)}
    assert set(slots) == {"w1", "w2"}
    w1 = slots["w1"]
    assert (w1.queues, w1.capacity, w1.in_flight, w1.free) == (("a", "b"), 5, 2, 3)
    w2 = slots["w2"]
    assert (w2.queues, w2.capacity, w2.in_flight, w2.free) == (("b",), 4, 0, 4)


async def test_worker_slots_exclude_inactive_and_stale_workers(
    storage: Storage, add_worker
) -> None:
    for wid in ("active", "draining", "stopped", "failed", "stale"):
        await add_worker(id=wid)
    await storage.request_worker("draining", "drain")
    await storage.set_worker_status("stopped", "stopped")
    await storage.set_worker_status("failed", "failed")
    await asyncio.sleep(1.0)
    await storage.heartbeat("active", None)
    await storage.heartbeat("draining", None)
    # "stale" has not sent a heartbeat for a second
    assert [s.id for s in await storage.worker_slots(0.6)] == ["active"]
    assert {s.id for s in await storage.worker_slots(60)} == {"active", "stale"}


# -- dispatch ---------------------------------------------------------------------------
async def test_dispatch_assigns_as_the_chooser_says(
    storage: Storage, make_job, add_worker
) -> None:
    await add_worker(id="w1")
    await add_worker(id="w2")
    ids = [e.id for e in await storage.enqueue([make_job() for _ in range(4)])]

    def alternate(jobs: list[PendingJob]) -> list[tuple[int, str]]:
        # odd-indexed jobs to w2, even to w1, and the last one to nobody
        return [(j.id, "w1" if i % 2 == 0 else "w2") for i, j in enumerate(jobs[:3])]

    pairs = await storage.dispatch(["w1", "w2"], {"default": 10}, alternate)
    assert sorted(pairs) == sorted([(ids[0], "w1"), (ids[1], "w2"), (ids[2], "w1")])
    for job_id, worker in pairs:
        job = await storage.get_job(job_id)
        assert (job["status"], job["worker_id"], job["attempts"]) == ("assigned", worker, 1)
        assert job["token"] is not None
        [a] = await storage.job_assignments(job_id)
        assert (a["worker_id"], a["queue_name"], a["token"]) == (worker, "default", job["token"])
        assert a["outcome"] is None and a["assigned_at"] is not None
    left = await storage.get_job(ids[3])
    assert (left["status"], left["worker_id"], left["attempts"]) == ("pending", None, 0)
    assert await storage.job_assignments(ids[3]) == []


async def test_dispatch_skips_workers_that_are_not_active(
    storage: Storage, make_job, add_worker
) -> None:
    await add_worker(id="w1")
    await add_worker(id="w2")
    await storage.request_worker("w2", "drain")
    [e] = await storage.enqueue([make_job()])
    to_w2 = Recorder("w2")
    # w2 drains: a chooser's pair for it is dropped, and with no active worker nothing runs
    assert await storage.dispatch(["w2"], {"default": 10}, to_w2) == []
    assert to_w2.seen == []
    assert await storage.dispatch(["w1", "w2"], {"default": 10}, to_w2) == []
    assert (await storage.get_job(e.id))["status"] == "pending"
    assert await storage.dispatch(["w1", "w2"], {"default": 10}, Recorder("w1")) == [(e.id, "w1")]
    assert await storage.dispatch(["nobody"], {"default": 10}, Recorder("nobody")) == []


async def test_dispatch_picks_by_priority_then_run_at(
    storage: Storage, make_job, add_worker
) -> None:
    await add_worker(id="w1", concurrency=10)
    # b becomes due before a although it was enqueued later; c outranks both
    a, b = await storage.enqueue([make_job(delay_s=0.4), make_job()])
    [c] = await storage.enqueue([make_job(priority=5)])
    [d] = await storage.enqueue([make_job(priority=-5)])
    await asyncio.sleep(0.5)
    picked = []
    for _ in range(4):
        pairs = await storage.dispatch(["w1"], {"default": 1}, Recorder("w1"))
        picked += [job_id for job_id, _ in pairs]
    assert picked == [c.id, b.id, a.id, d.id]


async def test_dispatch_offers_only_due_jobs_of_the_named_queues_within_limits(
    storage: Storage, make_job, add_worker
) -> None:
    await add_worker(id="w1", queues=["a", "b", "c"], concurrency=10)
    due_a = [e.id for e in await storage.enqueue([make_job(queue_name="a") for _ in range(3)])]
    due_b = [e.id for e in await storage.enqueue([make_job(queue_name="b") for _ in range(3)])]
    await storage.enqueue([make_job(queue_name="c")])
    [future] = [e.id for e in await storage.enqueue([make_job(queue_name="a", delay_s=3600)])]
    chooser = Recorder("w1")
    pairs = await storage.dispatch(["w1"], {"a": 10, "b": 2}, chooser)
    [offered] = chooser.seen
    assert {j.id for j in offered} == set(due_a) | set(due_b[:2])
    assert {j.queue_name for j in offered} == {"a", "b"}
    assert all(j.priority == 0 and j.run_at is not None for j in offered)
    assert future not in {j.id for j in offered}
    assert sorted(p[0] for p in pairs) == sorted(due_a + due_b[:2])
    assert (await storage.get_job(future))["status"] == "pending"
    # nothing due is left in a, b has one more
    again = Recorder("w1")
    assert await storage.dispatch(["w1"], {"a": 10, "b": 10}, again) == [(due_b[2], "w1")]


async def test_each_assignment_counts_an_attempt_with_a_larger_token(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job(max_attempts=5)])
    tokens = []
    for attempt in (1, 2, 3):
        assert await assign("w1") == [e.id]
        job = await storage.get_job(e.id)
        assert job["attempts"] == attempt
        tokens.append(job["token"])
        retry = await outcome(e.id, "pending", error=f"fail {attempt}", retry_in=0)
        assert await storage.report([retry]) == [(e.id, "pending")]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    history = await storage.job_assignments(e.id)
    assert [h["token"] for h in history] == tokens
    assert [h["outcome"] for h in history] == ["failed"] * 3


# -- claim ------------------------------------------------------------------------------
async def test_claim_assigned_returns_unheld_assignments(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    await add_worker(id="w2")
    ids = [e.id for e in await storage.enqueue(
        [make_job(payload={"i": i}, priority=i, timeout=9.5) for i in range(3)]
    )]
    await assign("w1")
    claimed = await storage.claim_assigned("w1", [])
    assert sorted(c.id for c in claimed) == ids
    by_id = {c.id: c for c in claimed}
    for i, job_id in enumerate(ids):
        c, job = by_id[job_id], await storage.get_job(job_id)
        assert (c.token, c.payload, c.priority, c.timeout) == (job["token"], {"i": i}, i, 9.5)
        assert (c.queue_name, c.task_name, c.attempts, c.max_attempts) == ("default", "noop", 1, 3)
        assert (c.created_at, c.run_at) == (job["created_at"], job["run_at"])
    assert [c.id for c in await storage.claim_assigned("w1", ids[:2])] == [ids[2]]
    assert await storage.claim_assigned("w2", []) == []
    # a started job is no longer "assigned"
    await storage.report([await outcome(ids[0], "running", started=time.time())])
    assert sorted(c.id for c in await storage.claim_assigned("w1", [])) == ids[1:]


# -- report -----------------------------------------------------------------------------
async def test_report_running_then_succeeded(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job()])
    await assign("w1")
    t0 = time.time()
    assert await storage.report([await outcome(e.id, "running", started=t0)]) == [
        (e.id, "running")
    ]
    job = await storage.get_job(e.id)
    assert (job["status"], job["worker_id"]) == ("running", "w1")
    assert abs(job["started_at"].timestamp() - t0) < 0.01
    assert job["finished_at"] is None

    done = await outcome(e.id, "succeeded", started=t0, finished=t0 + 1.5, result_json='{"ok": 1}')
    assert await storage.report([done]) == [(e.id, "succeeded")]
    job = await storage.get_job(e.id)
    assert (job["status"], job["result"], job["worker_id"]) == ("succeeded", {"ok": 1}, "w1")
    assert abs(job["finished_at"].timestamp() - (t0 + 1.5)) < 0.01
    [a] = await storage.job_assignments(e.id)
    assert a["outcome"] == "succeeded"
    assert abs((a["finished_at"] - a["started_at"]).total_seconds() - 1.5) < 0.01


async def test_report_retry_returns_the_job_to_pending_later(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job()])
    await assign("w1")
    await storage.report([await outcome(e.id, "running", started=time.time())])
    retry = await outcome(e.id, "pending", error="ValueError: boom", retry_in=30)
    assert await storage.report([retry]) == [(e.id, "pending")]
    job = await storage.get_job(e.id)
    now = await storage.db_now()
    assert (job["status"], job["worker_id"], job["attempts"]) == ("pending", None, 1)
    assert job["last_error"] == "ValueError: boom"
    assert now + timedelta(seconds=25) < job["run_at"] < now + timedelta(seconds=35)
    [a] = await storage.job_assignments(e.id)
    assert a["outcome"] == "failed"
    # not due: the dispatcher does not see it
    assert await assign("w1") == []
    due_in = await storage.next_due_in()
    assert due_in is not None and 25 < due_in < 35


async def test_report_dead(storage: Storage, make_job, add_worker, assign, outcome) -> None:
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job(max_attempts=1)])
    await assign("w1")
    dead = await outcome(e.id, "dead", started=1.0, finished=time.time(), error="gave up")
    assert await storage.report([dead]) == [(e.id, "dead")]
    job = await storage.get_job(e.id)
    assert (job["status"], job["last_error"]) == ("dead", "gave up")
    assert job["finished_at"] is not None
    assert [a["outcome"] for a in await storage.job_assignments(e.id)] == ["dead"]


async def test_stale_or_repeated_reports_change_nothing(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job()])
    await assign("w1")
    old_start = await outcome(e.id, "running", started=1.0)
    await storage.report([await outcome(e.id, "pending", error="first", retry_in=0)])
    await assign("w1")
    current = await storage.get_job(e.id)
    # the first attempt's late reports present an old token
    stale_done = await outcome(e.id, "succeeded", started=1.0, finished=2.0)
    stale_done.token = old_start.token
    assert await storage.report([old_start, stale_done]) == []
    assert await storage.get_job(e.id) == current

    start = await outcome(e.id, "running", started=3.0)
    assert await storage.report([start]) == [(e.id, "running")]
    assert await storage.report([start]) == []  # a repeated start
    done = await outcome(e.id, "succeeded", started=3.0, finished=4.0, result_json='"first"')
    assert await storage.report([done]) == [(e.id, "succeeded")]
    finished = await storage.get_job(e.id)
    again = await outcome(e.id, "succeeded", started=3.0, finished=9.0, result_json='"second"')
    retry = await outcome(e.id, "pending", error="late", retry_in=0)
    assert await storage.report([again]) == []
    assert await storage.report([retry]) == []
    assert await storage.report([start]) == []
    assert await storage.get_job(e.id) == finished
    assert finished["result"] == "first"


async def test_report_applies_a_batch_for_many_jobs(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1", concurrency=10)
    ids = [e.id for e in await storage.enqueue([make_job() for _ in range(4)])]
    await assign("w1")
    batch = [
        await outcome(ids[0], "running", started=1.0),
        await outcome(ids[1], "succeeded", started=1.0, finished=2.0, result_json="1"),
        await outcome(ids[2], "pending", error="e", retry_in=0),
        await outcome(ids[3], "dead", started=1.0, finished=2.0, error="d"),
    ]
    stale = await outcome(ids[3], "succeeded", started=1.0, finished=2.0)
    stale.token -= 1
    applied = await storage.report([*batch, stale])
    assert sorted(applied) == sorted(zip(ids, ["running", "succeeded", "pending", "dead"], strict=True))
    statuses = [(await storage.get_job(i))["status"] for i in ids]
    assert statuses == ["running", "succeeded", "pending", "dead"]


async def test_start_and_finish_of_one_job_in_one_batch(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    # qworker's Reporter merges these itself, but the contract takes any batch of outcomes.
    await add_worker(id="w1")
    [e] = await storage.enqueue([make_job()])
    await assign("w1")
    batch = [
        await outcome(e.id, "running", started=1.0),
        await outcome(e.id, "succeeded", started=1.0, finished=2.0, result_json="7"),
    ]
    await storage.report(batch)
    job = await storage.get_job(e.id)
    assert (job["status"], job["result"]) == ("succeeded", 7)


# -- giving jobs back ---------------------------------------------------------------------
async def test_hand_back_returns_unstarted_jobs_uncounted(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    await add_worker(id="w2")
    [elsewhere] = [e.id for e in await storage.enqueue([make_job()])]
    assert await assign("w2") == [elsewhere]
    started, unstarted = [e.id for e in await storage.enqueue([make_job(), make_job()])]
    assert sorted(await assign("w1")) == [started, unstarted]
    await storage.report([await outcome(started, "running", started=1.0)])

    assert await storage.hand_back("w1") == [unstarted]
    job = await storage.get_job(unstarted)
    assert (job["status"], job["worker_id"], job["attempts"]) == ("pending", None, 0)
    [a] = await storage.job_assignments(unstarted)
    assert a["outcome"] == "returned" and a["finished_at"] is not None
    assert (await storage.get_job(started))["status"] == "running"
    assert (await storage.get_job(elsewhere))["status"] == "assigned"
    assert await storage.hand_back("w1") == []
    # it can be dispatched again at once
    assert await assign("w2") == [unstarted]


async def test_release_running_requeues_or_buries(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    retried, buried, unstarted = [e.id for e in await storage.enqueue([
        make_job(max_attempts=3), make_job(max_attempts=1), make_job(),
    ])]
    await assign("w1")
    await storage.report([
        await outcome(retried, "running", started=1.0),
        await outcome(buried, "running", started=1.0),
    ])
    released = await storage.release_running("w1", "worker stopped")
    assert sorted(released) == sorted([(retried, "pending"), (buried, "dead")])
    r = await storage.get_job(retried)
    assert (r["status"], r["worker_id"], r["last_error"]) == ("pending", None, "worker stopped")
    assert r["attempts"] == 1  # the interrupted attempt counts
    b = await storage.get_job(buried)
    assert (b["status"], b["last_error"]) == ("dead", "worker stopped")
    assert b["finished_at"] is not None
    for job_id in (retried, buried):
        [a] = await storage.job_assignments(job_id)
        assert a["outcome"] == "interrupted"
    assert (await storage.get_job(unstarted))["status"] == "assigned"
    assert await storage.release_running("w1", "again") == []


async def test_worker_stats_count_outcomes(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    await add_worker(id="w1")
    ok, bad, _busy = [e.id for e in await storage.enqueue([make_job(), make_job(), make_job()])]
    await assign("w1")
    await storage.report([
        await outcome(ok, "succeeded", started=10.0, finished=12.0),
        await outcome(bad, "pending", error="x", retry_in=0),
    ])
    [s] = await storage.worker_stats()
    assert s["worker_id"] == "w1"
    assert (s["assigned"], s["succeeded"], s["failed"], s["dead"], s["in_flight"]) == (
        3, 1, 1, 0, 1
    )
    assert abs(s["avg_run_s"] - 2.0) < 0.01


async def test_concurrent_dispatchers_never_assign_a_job_twice(
    storage: Storage, make_job, add_worker
) -> None:
    for wid in ("w1", "w2", "w3"):
        await add_worker(id=wid, concurrency=100)
    ids = [e.id for e in await storage.enqueue([make_job() for _ in range(60)])]
    # three passes at once, again until every job is assigned: on PostgreSQL the passes'
    # locking scans skip each other's rows and take all 60 at the first go; on MySQL each
    # pass locks the due jobs its plain read found (see pick_due), so passes that read the
    # same ones share them and the rest waits for the next go
    results = []
    for _ in range(10):
        results += await asyncio.gather(*(
            storage.dispatch([wid], {"default": 25}, Recorder(wid))
            for wid in ("w1", "w2", "w3")))
        if sum(len(pairs) for pairs in results) >= 60:
            break
    assert sum(len(pairs) for pairs in results[:3]) >= 25  # the first go made progress
    assigned = [job_id for pairs in results for job_id, _ in pairs]
    assert len(assigned) == len(set(assigned)) == 60
    assert sorted(assigned) == ids
    for pairs in results:
        for job_id, worker in pairs:
            assert (await storage.get_job(job_id))["worker_id"] == worker
            assert len(await storage.job_assignments(job_id)) == 1


# -- delayed jobs ---------------------------------------------------------------------------
async def test_delayed_jobs_are_not_read_to_find_what_is_due(
    storage: Storage, backend: str, db_url: str, make_job
) -> None:
    """10,000 jobs of a higher priority scheduled for tomorrow and 3 due: the dispatcher's
    question "when is the next job due" and its pick of a queue's due jobs read the due jobs,
    not the delayed ones (idx_jobs_pending_due, migration 0006). Before, both went through
    all 10,000 (the dispatch index is ordered by priority before the due time): the first
    read them, the second checked each index entry's due time (PostgreSQL's index condition
    is not counted as rows read, hence the plan)."""
    q = load_queries(backend)
    async with raw_sql(backend, db_url) as raw:
        digits = " UNION ALL ".join(f"SELECT {i}" for i in range(10))
        await raw.execute(
            "INSERT INTO jobs (queue_name, task_name, payload, priority, run_at)"
            f" WITH d (x) AS ({digits}) SELECT 'default', 'noop', '{{}}', 5, {raw.ago(1)}"
            " FROM d a, d b, d c, d e", -86_400.0)
        await storage.enqueue([make_job() for _ in range(3)])
        await raw.fetch("ANALYZE jobs" if backend == "postgres" else "ANALYZE TABLE jobs")

        next_due, _ = await rows_read(raw, q["next_due_in"])
        if backend == "postgres":
            pick, plan = await rows_read(raw, q["pick_pending"], ["default"], [60])
        else:
            pick, plan = await rows_read(raw, q["pick_due"], {"queue": "default", "limit": 60})
    print(f"rows read with 10,000 delayed jobs: next_due_in {next_due}, pick {pick}")
    assert next_due <= 5
    assert pick <= 10
    if backend == "postgres":
        assert "idx_jobs_pending_due" in plan, plan
