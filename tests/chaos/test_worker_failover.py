"""Workers that die or hang: their jobs run elsewhere, late reports change nothing."""

from __future__ import annotations

import collections
import signal
import time

import pytest
from e2e_helpers import wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body

pytestmark = pytest.mark.e2e

APP = "tests.chaos.probe_tasks"


def probe_runs(path) -> collections.Counter:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(int(line.split()[0]) for line in path.read_text().splitlines())


def worker_id_of(stack, db, name):
    pid = stack.services[name].proc.pid
    return wait_until(lambda: db.value("SELECT id FROM queue_workers WHERE pid = $1", pid),
                      timeout=10, what=f"{name}'s row")


@on_each_database
def test_sigkill_a_worker_during_a_3000_job_load(start_stack, db, tmp_path):
    probe = tmp_path / "runs.log"
    stack = start_stack(workers=3, concurrency=4, app=APP,
                        env={"QSTACK_PROBE_FILE": str(probe)})
    victim = worker_id_of(stack, db, "worker-2")
    with stack.client() as client:
        ids = []
        for _ in range(6):
            ids += client.enqueue_many([job_body("probe", 0.005) for _ in range(500)])
    wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") > 600,
               timeout=60, what="the load to be under way")
    held = db.value("SELECT count(*) FROM jobs WHERE worker_id = $1 AND status IN"
                    " ('assigned', 'running')", victim)
    killed_at = time.monotonic()
    stack.kill("worker-2", signal.SIGKILL)
    event = wait_until(lambda: db.fetch("SELECT * FROM failover_events WHERE failed_worker_id = $1",
                                        victim), timeout=30, what="a failover event")[0]
    detected_in = time.monotonic() - killed_at
    wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 3000,
               timeout=120, what="all 3000 jobs to succeed")
    assert db.value("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    assert event["event_type"] == "worker_crashed"
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", victim) == "failed"

    lost = {r["job_id"] for r in db.fetch(
        "SELECT job_id FROM job_assignments WHERE worker_id = $1 AND outcome = 'lost'", victim)}
    runs = probe_runs(probe)
    assert set(runs) == set(ids)  # every job ran
    duplicates = {job for job, n in runs.items() if n > 1}
    print(f"victim held {held} jobs, {len(lost)} were taken back, {len(duplicates)} ran twice; "
          f"failover event after {detected_in:.1f}s: {dict(event)}")
    assert event["jobs_recovered"] == len(lost)
    # a job runs twice only if it was in flight on the killed worker
    assert duplicates <= lost
    assert all(n <= 2 for n in runs.values())


@on_each_database
def test_sigstop_longer_than_the_ttl_then_sigcont(start_stack, db, tmp_path):
    probe = tmp_path / "runs.log"
    stack = start_stack(workers=3, concurrency=2, app=APP, env={
        "QSTACK_PROBE_FILE": str(probe), "WORKER_REGISTRATION_TTL": "4",
        "WORKER_HEALTH_CHECK_INTERVAL": "1"})
    victim = worker_id_of(stack, db, "worker-1")
    with stack.client() as client:
        ids = client.enqueue_many([job_body("probe", 0.2) for _ in range(120)])
    wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE worker_id = $1 AND status ="
                                " 'running'", victim), timeout=30, interval=0.01,
               what="the victim to run jobs")
    stack.kill("worker-1", signal.SIGSTOP)
    try:
        event = wait_until(lambda: db.fetch(
            "SELECT * FROM failover_events WHERE failed_worker_id = $1", victim),
            timeout=30, what="the paused worker to be declared dead")[0]
        assert event["event_type"] == "worker_unresponsive"
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'"
                                    f" AND {db.in_list('id', 1)}", ids) == len(ids),
                   timeout=60, what="every job to succeed elsewhere")
        before = db.fetch("SELECT id, status, worker_id, token, result, finished_at, attempts"
                          f" FROM jobs WHERE {db.in_list('id', 1)} ORDER BY id", ids)
    finally:
        stack.kill("worker-1", signal.SIGCONT)
    # the resumed worker finishes what it was running and reports it: nothing may change
    proc = stack.services["worker-1"].proc
    assert proc.wait(timeout=40) == 0  # told it was declared dead, it stops by itself
    time.sleep(0.5)
    after = db.fetch("SELECT id, status, worker_id, token, result, finished_at, attempts"
                     f" FROM jobs WHERE {db.in_list('id', 1)} ORDER BY id", ids)
    assert after == before
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", victim) == "failed"
    resumed_runs = [line for line in probe.read_text().splitlines()
                    if line.split()[1] == str(proc.pid)]
    print(f"the paused worker ran {len(resumed_runs)} jobs in all; event: {dict(event)}")
