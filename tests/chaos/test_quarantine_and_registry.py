"""A job that kills its workers is quarantined; a registry outage kills no worker."""

from __future__ import annotations

import signal
import time

import pytest
from e2e_helpers import wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body

pytestmark = [pytest.mark.e2e, on_each_database]

FAST = {"WORKER_HEALTH_CHECK_INTERVAL": "1", "WORKER_REGISTRATION_TTL": "4"}


def test_a_job_that_kills_its_worker_three_times_is_quarantined(start_stack, db):
    stack = start_stack(workers=4, concurrency=1, env=FAST)
    with stack.client() as client:
        poison = client.enqueue("crash", 3, max_attempts=10)
        job = wait_until(lambda: (j := client.get_job(poison))["status"] == "dead" and j,
                         timeout=90, what="the poison job to be quarantined")
        assert job["last_error"].startswith("quarantined: 3 workers died while running this job")
        assert job["attempts"] == 3  # far from max_attempts: the quarantine stopped it
        events = db.fetch("SELECT * FROM failover_events WHERE event_type = 'worker_crashed'"
                          " ORDER BY id")
        assert len(events) == 3
        assert poison in [q for e in events for q in _quarantined(e)]
        dead_workers = [s for s in stack.services.values()
                        if s.kind == "worker" and s.returncode is not None]
        assert len(dead_workers) == 3 and all(s.returncode == 3 for s in dead_workers)
        # the survivor keeps serving other jobs
        ids = client.enqueue_many([job_body("echo", i) for i in range(20)])
        assert [client.wait(i, timeout=30)["result"] for i in ids] == list(range(20))


def _quarantined(event) -> list[int]:
    import json

    details = event["details"]
    return (json.loads(details) if isinstance(details, str) else details)["quarantined"]


def test_stopping_the_registry_for_30s_declares_no_worker_dead(start_stack, db):
    stack = start_stack(workers=3, concurrency=2, env=FAST)
    wait_until(lambda: db.value("SELECT count(*) FROM queue_workers WHERE status = 'active'") == 3,
               timeout=20, what="3 active workers")
    before_events = db.value("SELECT count(*) FROM failover_events")
    stack.kill("registry", signal.SIGTERM)
    stack.services["registry"].proc.wait(timeout=20)
    stopped_at = time.monotonic()
    with stack.client() as client:
        ids = client.enqueue_many([job_body("noop") for _ in range(100)])
        # jobs keep flowing without the registry (workers heartbeat into the database)
        for job_id in ids:
            assert client.wait(job_id, timeout=30)["status"] == "succeeded"
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
        assert db.value("SELECT count(*) FROM queue_workers WHERE status = 'active'") == 3
        stack.restart("registry")
        time.sleep(6)  # more than a TTL with the registry back
        assert db.value("SELECT count(*) FROM queue_workers WHERE status = 'active'") == 3
        # MySQL has OFFSET only after a LIMIT: its largest, as its manual suggests
        everything = "LIMIT 18446744073709551615 " if db.dialect == "mysql" else ""
        kinds = [r["event_type"] for r in db.fetch(
            f"SELECT event_type FROM failover_events ORDER BY id {everything}OFFSET $1",
            before_events)]
        assert not [k for k in kinds if k.startswith("worker_")], kinds
        assert client.wait(client.enqueue("noop"), timeout=30)["status"] == "succeeded"
    assert all(s.running for s in stack.services.values() if s.kind == "worker")
