"""Retries with growing delays, dead jobs, cancel, delays, priority and unique keys, for real."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from e2e_helpers import wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body
from qshared.errors import Conflict, NotFound

pytestmark = [pytest.mark.e2e, on_each_database]

RETRY_BASE = 0.2


@pytest.fixture(scope="module")
def stack(start_stack):
    # One slot per worker and no prefetch, so a backlog forms and ordering is observable.
    return start_stack(
        workers=2, concurrency=1,
        env={"WORKER_PREFETCH": "0", "QSTACK_RETRY_BASE": str(RETRY_BASE)},
    )


@pytest.fixture
def client(stack):
    with stack.client() as c:
        yield c


def test_failing_job_retries_with_growing_delays_then_dies_with_its_error(client, db):
    job_id = client.enqueue("fail", {"message": "smtp said no"}, max_attempts=4)
    job = client.wait(job_id, timeout=30)
    assert job["status"] == "dead"
    assert job["attempts"] == 4
    assert "TaskFailed: smtp said no (attempt 4)" in job["last_error"]
    history = job["assignments"]
    assert [a["outcome"] for a in history] == ["failed", "failed", "failed", "dead"]
    gaps = []
    for prev, nxt in itertools.pairwise(history):
        finished = datetime.fromisoformat(prev["finished_at"])
        assigned = datetime.fromisoformat(nxt["assigned_at"])
        gaps.append((assigned - finished).total_seconds())
    print("retry gaps:", gaps)
    for n, gap in enumerate(gaps, start=1):
        nominal = RETRY_BASE * 2 ** (n - 1)
        assert gap >= nominal / 2 - 0.01, (n, gap)  # never earlier than the backoff allows
        assert gap <= nominal + 0.5, (n, gap)  # and not lost either
    assert gaps == sorted(gaps)
    assert db.value("SELECT count(*) FROM job_assignments WHERE job_id = $1", job_id) == 4


def test_cancelled_pending_job_never_runs(client, db):
    job_id = client.enqueue("echo", "never", delay_s=1.0)
    cancelled = client.cancel(job_id)
    assert cancelled["status"] == "cancelled"
    time.sleep(1.5)
    job = client.get_job(job_id)
    assert job["status"] == "cancelled"
    assert job["started_at"] is None and job["result"] is None
    assert job["assignments"] == []
    # a finished job cannot be cancelled; an unknown one is not found
    done = client.wait(client.enqueue("noop"), timeout=10)
    with pytest.raises(Conflict, match="only pending or assigned"):
        client.cancel(done["id"])
    with pytest.raises(NotFound):
        client.cancel(987654321)


def test_delayed_job_never_starts_before_its_time(client):
    delayed = client.enqueue("noop", delay_s=1.5)
    at = datetime.now(UTC) + timedelta(seconds=1.0)
    scheduled = client.enqueue("noop", run_at=at)
    early = client.get_job(delayed)
    assert early["status"] == "pending" and early["started_at"] is None
    for job_id, not_before in ((delayed, 1.5), (scheduled, None)):
        job = client.wait(job_id, timeout=15)
        assert job["status"] == "succeeded"
        started = datetime.fromisoformat(job["started_at"])
        run_at = datetime.fromisoformat(job["run_at"])
        assert started >= run_at
        if not_before is not None:
            created = datetime.fromisoformat(job["created_at"])
            assert (started - created).total_seconds() >= not_before
        else:
            assert started >= at


def test_higher_priority_jobs_start_first_under_a_backlog(client):
    blockers = client.enqueue_many([job_body("sleep", 0.5) for _ in range(2)])
    wait_until(lambda: all(client.get_job(b)["status"] == "running" for b in blockers),
               timeout=10, what="both workers busy")
    low = client.enqueue_many([job_body("noop", {"p": "low"}, priority=0) for _ in range(10)])
    high = client.enqueue_many([job_body("noop", {"p": "high"}, priority=5) for _ in range(10)])
    jobs = {j: client.wait(j, timeout=30) for j in low + high}
    assert all(j["status"] == "succeeded" for j in jobs.values())
    last_high = max(datetime.fromisoformat(jobs[j]["started_at"]) for j in high)
    first_low = min(datetime.fromisoformat(jobs[j]["started_at"]) for j in low)
    assert last_high <= first_low


def test_same_unique_key_returns_the_first_jobs_id(client):
    first = client.request("POST", "/api/v1/jobs", job_body("echo", 1, unique_key="report:42"))
    again = client.request("POST", "/api/v1/jobs", job_body("echo", 2, unique_key="report:42"))
    assert first["created"] is True and again == {"id": first["id"], "created": False}
    batch = client.enqueue_many([
        job_body("echo", 3, unique_key="report:42"),
        job_body("echo", 4, unique_key="report:43"),
        job_body("echo", 5, unique_key="report:43"),
    ])
    assert batch[0] == first["id"] and batch[1] == batch[2] != first["id"]
    assert client.wait(first["id"], timeout=10)["result"] == 1


def test_jobs_sharing_a_lock_key_never_run_at_the_same_time(client):
    same = client.enqueue_many([job_body("sleep", 0.15, lock_key="account:7") for _ in range(5)])
    free = client.enqueue_many([job_body("sleep", 0.15) for _ in range(2)])
    jobs = [client.wait(j, timeout=30) for j in same + free]
    assert all(j["status"] == "succeeded" for j in jobs)
    spans = sorted((datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"]))
                   for j in jobs[:5])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two jobs with one lock_key overlapped"
    # the unlocked jobs were free to run beside them (two workers)
    first_free = min(datetime.fromisoformat(j["started_at"]) for j in jobs[5:])
    assert first_free < spans[-1][0]
