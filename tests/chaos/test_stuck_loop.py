"""A task that blocks the event loop makes its worker unhealthy, not dead (thread heartbeats)."""

from __future__ import annotations

import pytest
from e2e_helpers import wait_until
from stack_fixtures import on_each_database

pytestmark = [pytest.mark.e2e, on_each_database]


def test_a_blocked_loop_shows_as_unhealthy_with_its_lag(start_stack, db):
    stack = start_stack(workers=1, concurrency=1, env={
        "WORKER_HEALTH_CHECK_INTERVAL": "0.5", "WORKER_REGISTRATION_TTL": "3"})
    worker_id = wait_until(lambda: db.value("SELECT id FROM queue_workers WHERE status ="
                                            " 'active'"), timeout=10, what="the worker")
    with stack.client() as client:
        job_id = client.enqueue("block", 5.0)  # longer than the TTL
        row = wait_until(lambda: db.fetch(
            "SELECT status, loop_lag_ms FROM worker_health_checks WHERE worker_id = $1"
            " AND status = 'unhealthy' ORDER BY checked_at DESC LIMIT 1", worker_id),
            timeout=20, what="an unhealthy health check")[0]
        assert row["loop_lag_ms"] >= 2000
        assert client.wait(job_id, timeout=30)["status"] == "succeeded"
    # heartbeats kept coming from their own thread: never declared dead
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", worker_id) == "active"
    assert db.value("SELECT count(*) FROM failover_events WHERE failed_worker_id = $1",
                    worker_id) == 0
    healthy_again = wait_until(lambda: db.value(
        "SELECT status FROM worker_health_checks WHERE worker_id = $1"
        " ORDER BY checked_at DESC LIMIT 1", worker_id) == "healthy", timeout=10,
        what="a healthy check after the block")
    assert healthy_again
