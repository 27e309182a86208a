"""Storage contract: liveness locks, worker recovery, timeouts, orphans, stale locks, lock_key."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta

import pytest

from qshared.errors import StorageError
from qshared.storage.base import Outcome, PendingJob, Storage


def uid(name: str) -> str:
    """A worker id of this test only: the liveness lock is server-wide, other runs share it."""
    return f"{name}-{secrets.token_hex(4)}"


async def alive(storage: Storage) -> dict[str, bool]:
    return {w["id"]: w["session_alive"] for w in await storage.liveness()}


async def wait_alive(storage: Storage, worker_id: str, want: bool, within: float = 3.0) -> float:
    """Seconds until liveness() reports `want` for the worker (a closing session takes a tick)."""
    t0 = time.monotonic()
    while (await alive(storage)).get(worker_id) is not want:
        assert time.monotonic() - t0 < within, f"{worker_id} never became session_alive={want}"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def start(storage: Storage, outcome, *job_ids: int, at: float | None = None) -> None:
    for job_id in job_ids:
        applied = await storage.report([await outcome(job_id, "running", started=at or time.time())])
        assert applied == [(job_id, "running")]


async def recover(storage: Storage, worker_id: str, **overrides):
    kwargs = {"reason": f"{worker_id} died", "event_type": "worker_crashed",
              "quarantine_after": 3, "details": {"rule": "test"}}
    kwargs.update(overrides)
    return await storage.recover_worker(worker_id, **kwargs)


# -- liveness ---------------------------------------------------------------------------
async def test_session_alive_follows_the_liveness_handle(storage: Storage, add_worker) -> None:
    w1, w2 = uid("w1"), uid("w2")
    await add_worker(id=w1)
    await add_worker(id=w2)
    assert await alive(storage) == {w1: False, w2: False}
    held = await storage.hold_liveness(w1)
    try:
        assert await alive(storage) == {w1: True, w2: False}
        # a second session cannot take the same worker's lock while the first holds it
        with pytest.raises(StorageError, match="held by another session"):
            await storage.hold_liveness(w1)
        assert (await alive(storage))[w1] is True
    finally:
        await held.close()
    assert await wait_alive(storage, w1, False) < 1.0
    again = await storage.hold_liveness(w1)
    try:
        assert await alive(storage) == {w1: True, w2: False}
    finally:
        await again.close()


async def test_liveness_lists_active_and_draining_workers_with_ages(
    storage: Storage, add_worker
) -> None:
    ids = {s: uid(s) for s in ("active", "draining", "stopped", "failed")}
    for wid in ids.values():
        await add_worker(id=wid)
    await storage.request_worker(ids["draining"], "drain")
    await storage.set_worker_status(ids["stopped"], "stopped")
    await storage.set_worker_status(ids["failed"], "failed")
    await asyncio.sleep(0.5)
    await storage.heartbeat(ids["active"], None)
    rows = {w["id"]: w for w in await storage.liveness()}
    assert set(rows) == {ids["active"], ids["draining"]}
    active, draining = rows[ids["active"]], rows[ids["draining"]]
    assert (active["status"], draining["status"]) == ("active", "draining")
    assert 0 <= active["heartbeat_age_s"] < 0.3
    assert 0.5 <= active["registered_age_s"] < 5
    assert 0.5 <= draining["heartbeat_age_s"] < 5
    assert abs(draining["heartbeat_age_s"] - draining["registered_age_s"]) < 0.1
    assert active["session_alive"] is False and draining["session_alive"] is False


async def test_db_uptime_is_the_servers_start_on_its_own_clock(storage: Storage) -> None:
    started, uptime = await storage.db_uptime()
    now = await storage.db_now()
    assert uptime > 0
    assert abs((now - timedelta(seconds=uptime) - started).total_seconds()) < 1.0
    started_again, later = await storage.db_uptime()
    assert started_again == started and later >= uptime


# -- recover_worker ---------------------------------------------------------------------
async def test_recover_worker_returns_everything_it_held(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    w1, w2 = uid("w1"), uid("w2")
    await add_worker(id=w1, concurrency=10)
    await add_worker(id=w2)
    queued, running, last_run, last_queued, done = [e.id for e in await storage.enqueue([
        make_job(), make_job(), make_job(max_attempts=1), make_job(max_attempts=1), make_job(),
    ])]
    assert sorted(await assign(w1)) == [queued, running, last_run, last_queued, done]
    await start(storage, outcome, running, last_run, done)
    await storage.report([await outcome(done, "succeeded", started=1.0, finished=2.0,
                                        result_json="1")])
    [other] = [e.id for e in await storage.enqueue([make_job()])]
    assert await assign(w2) == [other]
    mine, _ = await storage.acquire_lock("res:a", "owner-a", 30, worker_id=w1)
    await storage.acquire_lock("res:b", "owner-b", 0.05, worker_id=w1)  # expired: goes too
    theirs, _ = await storage.acquire_lock("res:c", "owner-c", 30, worker_id=w2)
    await storage.acquire_lock("res:d", "owner-d", 30)
    tokens = {j: (await storage.get_job(j))["token"] for j in (queued, running, last_run)}
    await asyncio.sleep(0.4)  # the heartbeat age becomes detection_ms

    event = await recover(storage, w1, details={"rule": "test", "n": 7})
    assert event is not None
    # a started job's attempt counts; an unstarted one gets its attempt back (as a hand-back)
    assert sorted(event["jobs"]) == sorted([(queued, "pending"), (running, "pending"),
                                            (last_run, "dead"), (last_queued, "pending")])
    assert event["quarantined"] == []
    assert sorted(event["locks"]) == ["res:a", "res:b"]
    assert (event["event_type"], event["failed_worker_id"], event["target_worker_id"]) == (
        "worker_crashed", w1, None)
    assert (event["jobs_recovered"], event["jobs_dead"]) == (3, 1)
    assert 400 <= event["detection_ms"] < 3000
    assert 0 <= event["recovery_ms"] < 5000
    assert event["failover_at"] is not None
    assert event["details"] == {"rule": "test", "n": 7, "reason": f"{w1} died",
                                "quarantined": [], "locks": event["locks"]}

    assert (await storage.get_worker(w1))["status"] == "failed"
    assert (await storage.get_worker(w2))["status"] == "active"
    for job_id, status, attempts, crashes in (
        (queued, "pending", 0, 0), (running, "pending", 1, 1),
        (last_run, "dead", 1, 1), (last_queued, "pending", 0, 0),
    ):
        job = await storage.get_job(job_id)
        assert (job["status"], job["worker_id"], job["attempts"], job["crash_count"]) == (
            status, None, attempts, crashes), job_id
        assert job["last_error"] == f"{w1} died"
        assert job["started_at"] is None
        assert (job["finished_at"] is not None) == (status == "dead")
        [a] = await storage.job_assignments(job_id)
        assert (a["outcome"], a["worker_id"]) == ("lost", w1)
        assert a["finished_at"] is not None
    assert (await storage.get_job(done))["status"] == "succeeded"
    assert [a["outcome"] for a in await storage.job_assignments(done)] == ["succeeded"]
    assert (await storage.get_job(other))["status"] == "assigned"
    assert [a["outcome"] for a in await storage.job_assignments(other)] == [None]
    assert await storage.get_lock("res:a") is None and await storage.get_lock("res:b") is None
    assert (await storage.get_lock("res:c"))["token"] == theirs
    assert (await storage.get_lock("res:d"))["owner"] == "owner-d"
    assert await storage.renew_lock("res:a", "owner-a", mine, 30) is None

    [listed] = await storage.failover_events(w1)
    assert listed["id"] == event["id"] and listed["detection_ms"] == event["detection_ms"]
    assert await storage.failover_events(w2) == []

    # late reports from the dead worker (its tokens) change nothing
    late = [Outcome(j, tokens[j], "succeeded", started=1.0, finished=2.0, result_json="1")
            for j in (queued, running)]
    assert await storage.report(late) == []
    assert await storage.report([Outcome(queued, tokens[queued], "running", started=1.0)]) == []
    assert [(await storage.get_job(j))["status"] for j in (queued, running)] == ["pending"] * 2

    # the recovered jobs run again elsewhere, with a new attempt and a larger token
    assert sorted(await assign(w2)) == [queued, running, last_queued]
    for job_id, attempts in ((queued, 1), (running, 2), (last_queued, 1)):
        job = await storage.get_job(job_id)
        assert (job["worker_id"], job["attempts"]) == (w2, attempts)
        assert job["token"] > tokens.get(job_id, 0)
    assert await storage.report(late) == []
    stale = Outcome(running, tokens[running], "running", started=time.time())
    assert await storage.report([stale]) == []
    assert (await storage.get_job(running))["status"] == "assigned"


async def test_recover_worker_is_idempotent(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    w1 = uid("w1")
    await add_worker(id=w1)
    [e] = await storage.enqueue([make_job()])
    await assign(w1)
    await start(storage, outcome, e.id)
    first = await recover(storage, w1)
    assert first is not None and first["jobs"] == [(e.id, "pending")]
    job = await storage.get_job(e.id)
    assert await recover(storage, w1) is None
    assert await recover(storage, uid("nobody")) is None
    assert await storage.get_job(e.id) == job
    assert [ev["id"] for ev in await storage.failover_events(w1)] == [first["id"]]
    assert (await storage.get_worker(w1))["status"] == "failed"


async def test_jobs_are_quarantined_after_n_workers_died_running_them(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    [e] = await storage.enqueue([make_job(max_attempts=10)])
    [bystander] = await storage.enqueue([make_job(max_attempts=10, queue_name="other")])

    async def crash(running: bool) -> dict:
        wid = uid("w")
        await add_worker(id=wid, queues=["default", "other"])
        assert e.id in await assign(wid, queues=["default", "other"])
        if running:
            await start(storage, outcome, e.id)
        event = await recover(storage, wid, quarantine_after=2)
        assert event is not None
        return event

    first = await crash(running=True)
    assert (e.id, "pending") in first["jobs"] and first["quarantined"] == []
    assert (await storage.get_job(e.id))["crash_count"] == 1
    # a worker that dies before starting the job does not count against it
    second = await crash(running=False)
    assert (e.id, "pending") in second["jobs"] and second["quarantined"] == []
    assert (await storage.get_job(e.id))["crash_count"] == 1
    third = await crash(running=True)
    assert (e.id, "dead") in third["jobs"] and third["quarantined"] == [e.id]
    assert (third["jobs_recovered"], third["jobs_dead"]) == (len(third["jobs"]) - 1, 1)
    assert third["details"]["quarantined"] == [e.id]
    job = await storage.get_job(e.id)
    # attempts: two runs counted; the unstarted assignment gave its attempt back
    assert (job["status"], job["crash_count"], job["attempts"]) == ("dead", 2, 2)
    assert job["last_error"].startswith("quarantined:")
    assert job["finished_at"] is not None
    # the job that was only ever assigned alongside it is not quarantined
    other = await storage.get_job(bystander.id)
    assert (other["status"], other["crash_count"]) == ("pending", 0)


async def test_recover_a_stopped_worker_without_marking_it_failed(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    w1, w2, w3 = uid("w1"), uid("w2"), uid("w3")
    for wid in (w1, w2, w3):
        await add_worker(id=wid)
    a, b = [e.id for e in await storage.enqueue([make_job(), make_job()])]
    await assign(w1, limit=1)
    await assign(w2, limit=1)
    await start(storage, outcome, a)
    assert await storage.orphan_holders() == []
    # w1 stops without handing its job back; w3 stops holding nothing; w2 fails
    await storage.set_worker_status(w1, "stopped")
    await storage.set_worker_status(w3, "stopped")
    await storage.set_worker_status(w2, "failed")
    assert sorted(await storage.orphan_holders()) == sorted([w1, w2])

    assert await recover(storage, w1) is None  # not active: mark_failed refuses
    assert (await storage.get_job(a))["status"] == "running"
    event = await recover(storage, w1, mark_failed=False, event_type="orphans_recovered")
    assert event["jobs"] == [(a, "pending")]
    assert (event["event_type"], event["jobs_recovered"], event["jobs_dead"]) == (
        "orphans_recovered", 1, 0)
    assert event["detection_ms"] is None
    assert (await storage.get_worker(w1))["status"] == "stopped"
    assert [x["outcome"] for x in await storage.job_assignments(a)] == ["lost"]
    assert await storage.orphan_holders() == [w2]
    event = await recover(storage, w2, mark_failed=False, event_type="orphans_recovered")
    assert event["jobs"] == [(b, "pending")]
    assert await storage.orphan_holders() == []
    empty = await recover(storage, w3, mark_failed=False, event_type="orphans_recovered")
    assert (empty["jobs"], empty["jobs_recovered"], empty["locks"]) == ([], 0, [])


async def test_record_failover_event_and_list_newest_first(
    storage: Storage, add_worker
) -> None:
    w1 = uid("w1")
    await add_worker(id=w1)
    held = await storage.record_failover_event("held_back", None, {"workers": [w1], "note": "x"})
    assert (held["event_type"], held["failed_worker_id"], held["jobs_recovered"],
            held["jobs_dead"], held["detection_ms"], held["recovery_ms"]) == (
        "held_back", None, 0, 0, None, None)
    assert held["details"] == {"workers": [w1], "note": "x"}
    crashed = await recover(storage, w1)
    other = await storage.record_failover_event("manual", w1, {})
    assert [e["id"] for e in await storage.failover_events()] == [
        other["id"], crashed["id"], held["id"]]
    assert [e["id"] for e in await storage.failover_events(limit=2)] == [other["id"], crashed["id"]]
    assert [e["id"] for e in await storage.failover_events(w1)] == [other["id"], crashed["id"]]


# -- timeouts ---------------------------------------------------------------------------
async def test_recover_timed_out_returns_jobs_past_timeout_and_grace(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    w1 = uid("w1")
    await add_worker(id=w1, concurrency=10)
    late, last, fresh, waiting, slow = [e.id for e in await storage.enqueue([
        make_job(timeout=0.1), make_job(timeout=0.1, max_attempts=1), make_job(timeout=0.1),
        make_job(timeout=0.1), make_job(timeout=100),
    ])]
    await assign(w1)
    long_ago = time.time() - 60
    await start(storage, outcome, late, last, slow, at=long_ago)
    await start(storage, outcome, fresh)  # started now: 0.1 s timeout + 30 s grace ahead
    tokens = {j: (await storage.get_job(j))["token"] for j in (late, last)}

    assert await storage.recover_timed_out(120) == []  # grace covers everything
    assert sorted(await storage.recover_timed_out(30)) == sorted([(late, "pending"),
                                                                  (last, "dead")])
    for job_id, status in ((late, "pending"), (last, "dead")):
        job = await storage.get_job(job_id)
        assert (job["status"], job["worker_id"], job["attempts"], job["crash_count"]) == (
            status, None, 1, 0)
        assert job["last_error"].startswith("timed out")
        assert (job["finished_at"] is not None) == (status == "dead")
        [a] = await storage.job_assignments(job_id)
        assert a["outcome"] == "timed_out" and a["finished_at"] is not None
    for job_id, status in ((fresh, "running"), (waiting, "assigned"), (slow, "running")):
        assert (await storage.get_job(job_id))["status"] == status
    assert (await storage.get_worker(w1))["status"] == "active"
    assert await storage.recover_timed_out(30) == []
    # the worker's late success does not resurrect the recovered attempt
    done = Outcome(late, tokens[late], "succeeded", started=long_ago, finished=time.time())
    assert await storage.report([done]) == []
    assert (await storage.get_job(late))["status"] == "pending"


# -- locks ------------------------------------------------------------------------------
async def test_clear_stale_locks_keeps_live_and_recently_expired_rows(storage: Storage) -> None:
    assert await storage.get_lock("old") is None
    await storage.acquire_lock("old", "o1", 0.05, worker_id="wx")
    await asyncio.sleep(1.0)
    await storage.acquire_lock("recent", "o2", 0.05)
    live, _ = await storage.acquire_lock("live", "o3", 30)
    await asyncio.sleep(0.2)
    recent = await storage.get_lock("recent")
    assert recent["live"] is False and -1.0 < recent["expires_in_s"] < 0
    old = await storage.get_lock("old")
    assert (old["owner"], old["worker_id"], old["live"]) == ("o1", "wx", False)
    assert old["expires_in_s"] < -1.0
    assert await storage.clear_stale_locks(0.6) == ["old"]
    assert await storage.get_lock("old") is None
    assert (await storage.get_lock("recent"))["owner"] == "o2"
    got = await storage.get_lock("live")
    assert (got["lock_key"], got["owner"], got["token"], got["live"]) == ("live", "o3", live, True)
    assert 29 < got["expires_in_s"] <= 30
    assert await storage.clear_stale_locks(0.6) == []
    assert await storage.clear_stale_locks(0) == ["recent"]
    assert [lock["lock_key"] for lock in await storage.list_locks()] == ["live"]


# -- lock_key ---------------------------------------------------------------------------
async def test_two_jobs_with_one_lock_key_are_never_both_active(
    storage: Storage, make_job, add_worker, outcome
) -> None:
    w1, w2 = uid("w1"), uid("w2")
    await add_worker(id=w1, concurrency=10)
    await add_worker(id=w2, concurrency=10)
    first, second, free = [e.id for e in await storage.enqueue([
        make_job(lock_key="acct:1"), make_job(lock_key="acct:1"), make_job(),
    ])]
    offered: list[list[PendingJob]] = []

    def greedy(jobs: list[PendingJob]) -> list[tuple[int, str]]:
        offered.append(jobs)
        return [(j.id, w1 if i % 2 == 0 else w2) for i, j in enumerate(jobs)]

    # a chooser that hands out both gets only the first: the storage keeps one job per key
    pairs = await storage.dispatch([w1, w2], {"default": 10}, greedy)
    assert {j.lock_key for j in offered[0] if j.id in (first, second)} == {"acct:1"}
    assert sorted(pairs) == sorted([(first, w1), (free, w1)])
    second_job = await storage.get_job(second)
    assert (second_job["status"], second_job["attempts"]) == ("pending", 0)
    assert await storage.job_assignments(second) == []

    def to_w2(jobs: list[PendingJob]) -> list[tuple[int, str]]:
        offered.append(jobs)
        return [(j.id, w2) for j in jobs]

    # while the first holds the key, the second is not even offered
    offered.clear()
    assert await storage.dispatch([w2], {"default": 10}, to_w2) == []
    assert offered == []
    await start(storage, outcome, first)
    assert await storage.dispatch([w2], {"default": 10}, to_w2) == []
    assert (await storage.get_job(second))["status"] == "pending"
    done = await outcome(first, "succeeded", started=1.0, finished=2.0, result_json="1")
    assert await storage.report([done]) == [(first, "succeeded")]
    assert await storage.dispatch([w2], {"default": 10}, to_w2) == [(second, w2)]
    [seen] = offered
    assert [(j.id, j.lock_key) for j in seen] == [(second, "acct:1")]


async def test_a_recovered_lock_key_job_frees_the_key(
    storage: Storage, make_job, add_worker, assign, outcome
) -> None:
    w1, w2 = uid("w1"), uid("w2")
    await add_worker(id=w1)
    await add_worker(id=w2)
    first, second = [e.id for e in await storage.enqueue([
        make_job(lock_key="k", priority=1), make_job(lock_key="k"),
    ])]
    assert await assign(w1, limit=1) == [first]
    await start(storage, outcome, first)
    assert await assign(w2) == []
    await recover(storage, w1)
    # the key is free again; priority decides which of the two takes it
    assert await assign(w2, limit=1) == [first]
    assert (await storage.get_job(second))["status"] == "pending"


# -- set_worker_status ------------------------------------------------------------------
async def test_set_worker_status_only_from_the_named_states(
    storage: Storage, add_worker
) -> None:
    w1, w2 = uid("w1"), uid("w2")
    await add_worker(id=w1)
    await add_worker(id=w2)
    row = await storage.set_worker_status(w1, "stopped", from_states=("active", "draining"))
    assert (row["id"], row["status"], row["requested"]) == (w1, "stopped", None)
    assert await storage.set_worker_status(w1, "failed", from_states=("active",)) is None
    assert (await storage.get_worker(w1))["status"] == "stopped"
    # a late "stopped" never hides "failed"
    assert (await storage.set_worker_status(w2, "failed"))["status"] == "failed"
    assert await storage.set_worker_status(
        w2, "stopped", from_states=("active", "draining")) is None
    assert (await storage.get_worker(w2))["status"] == "failed"
    assert await storage.set_worker_status(uid("nobody"), "stopped") is None
    row = await storage.set_worker_status(w1, "draining", requested="stop",
                                          from_states=("stopped",))
    assert (row["status"], row["requested"]) == ("draining", "stop")
