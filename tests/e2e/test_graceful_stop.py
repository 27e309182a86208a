"""SIGTERM to one of 3 workers mid-load: every job still succeeds, nothing stays with it."""

from __future__ import annotations

import signal

import pytest
from e2e_helpers import wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body

pytestmark = pytest.mark.e2e


@on_each_database
def test_sigterm_one_worker_during_a_2000_job_load(start_stack, db):
    stack = start_stack(workers=3, concurrency=4)
    victim = stack.services["worker-1"]
    with stack.client() as client:
        for _ in range(4):
            client.enqueue_many([job_body("sleep", 0.01) for _ in range(500)])

        def victim_id():
            return db.value("SELECT id FROM queue_workers WHERE pid = $1", victim.proc.pid)

        worker_id = wait_until(victim_id, timeout=10, what="the victim's row")
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") > 300,
                   timeout=60, what="the load to be under way")
        held = db.value("SELECT count(*) FROM jobs WHERE worker_id = $1 AND status IN"
                        " ('assigned', 'running')", worker_id)
        assert held > 0, "the victim should hold work when it is stopped"
        stack.kill("worker-1", signal.SIGTERM)
        assert victim.proc.wait(timeout=40) == 0

        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 2000,
                   timeout=120, what="all 2000 jobs to succeed")
    assert db.value("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    assert db.value("SELECT count(*) FROM jobs WHERE worker_id = $1 AND status IN"
                    " ('assigned', 'running')", worker_id) == 0
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", worker_id) == "stopped"
    # every assignment the victim had is closed: finished, or handed back unstarted
    open_rows = db.value("SELECT count(*) FROM job_assignments WHERE worker_id = $1"
                         " AND outcome IS NULL", worker_id)
    assert open_rows == 0
    rows = db.fetch("SELECT outcome, count(*) AS n FROM job_assignments WHERE worker_id = $1"
                    " GROUP BY outcome", worker_id)
    outcomes = {r["outcome"]: r["n"] for r in rows}
    print("victim's assignments:", outcomes)
    assert set(outcomes) <= {"succeeded", "returned"}
    # no job ran twice: each has exactly one succeeded assignment
    assert db.value("SELECT count(*) FROM job_assignments WHERE outcome = 'succeeded'") == 2000
