"""`qctl demo --no-tui` as a user runs it: the demo load reaches every queue with every kind
of job, a worker is killed and comes back, and Ctrl-C stops it all. (With qtui in the
foreground it is driven in tmux by the qtui tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import free_port_base, interrupt, wait_until
from stack_fixtures import on_each_database

pytestmark = [pytest.mark.e2e, on_each_database]

BIN = Path(sys.executable).parent


def test_demo_load_shows_every_kind_of_job_and_a_failover(e2e_db_url, db, tmp_path):
    base = free_port_base()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_URL", "DB_", "QSTACK_"))}
    env.update({"QSTACK_CONFIG_DIR": str(tmp_path / "config"), "QSTACK_TOKEN": "demo-token",
                "WORKER_HEALTH_CHECK_INTERVAL": "1"})
    log = (tmp_path / "demo.out").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "qctl"), "demo", "--no-tui", "--db", e2e_db_url, "--port-base", str(base),
         "--rate", "40", "--chaos-every", "6", "--state-dir", str(tmp_path / "state")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def outcomes():
            if proc.poll() is not None:
                pytest.fail(f"qctl demo exited: {(tmp_path / 'demo.out').read_text()[-3000:]}")
            rows = db.fetch("SELECT queue_name, task_name, status, count(*) AS n FROM jobs"
                            " GROUP BY 1, 2, 3")
            seen = {(r["queue_name"], r["status"]) for r in rows}
            tasks = {r["task_name"] for r in rows}
            wanted = {("default", "succeeded"), ("emails", "succeeded"), ("reports", "succeeded"),
                      ("default", "dead"), ("reports", "dead")}
            return wanted <= seen and {"noop", "echo", "sleep", "cpu", "flaky", "fail"} <= tasks

        wait_until(outcomes, timeout=90, interval=0.5, what="every kind of demo job finishing")
        # the demo made itself the current context, so qctl reaches it without options (run
        # here, while the killed worker's restart is still some seconds away)
        out = subprocess.run([str(BIN / "qctl"), "worker", "list"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "active" in out.stdout, out.stdout + out.stderr

        def failover_and_restart():
            crashed = db.value("SELECT count(*) FROM failover_events"
                               " WHERE event_type = 'worker_crashed'")
            active = db.value("SELECT count(*) FROM queue_workers WHERE status = 'active'")
            registered = db.value("SELECT count(*) FROM queue_workers")
            return crashed >= 1 and active == 3 and registered >= 4  # a restarted worker is new

        wait_until(failover_and_restart, timeout=60, interval=0.5,
                   what="a killed worker, its failover event and its restart")
    finally:
        interrupt(proc)
        log.close()
    assert proc.returncode == 0, (tmp_path / "demo.out").read_text()[-3000:]
    assert "demo stopped" in (tmp_path / "demo.out").read_text()
    assert db.value("SELECT count(*) FROM queue_workers WHERE status = 'active'") == 0
