"""3,000 noop jobs on 3 workers all succeed, each worker running 950 to 1,050 of them."""

from __future__ import annotations

import pytest
from e2e_helpers import wait_until
from qshared.client import job_body

pytestmark = pytest.mark.e2e


def test_3000_noop_jobs_spread_evenly_over_3_workers(start_stack, db):
    stack = start_stack(workers=3, concurrency=4)
    with stack.client() as client:
        ids = []
        for _ in range(6):
            ids += client.enqueue_many([job_body("noop", {"i": i}) for i in range(500)])
        assert len(set(ids)) == 3000

        def done():
            return db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 3000

        wait_until(done, timeout=120, what="3000 jobs to succeed")
    assert db.value("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    per_worker = db.fetch(
        "SELECT worker_id, count(*) AS n FROM job_assignments WHERE outcome = 'succeeded'"
        " GROUP BY worker_id ORDER BY worker_id"
    )
    counts = {r["worker_id"]: r["n"] for r in per_worker}
    print("jobs per worker:", counts)
    assert len(counts) == 3
    assert sum(counts.values()) == 3000
    assert all(950 <= n <= 1050 for n in counts.values()), counts
