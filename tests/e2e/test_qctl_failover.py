"""qctl's failover and lock commands against a real stack, checked in the database."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid

import pytest
from e2e_helpers import qctl_runner, wait_until
from stack_fixtures import on_each_database

from qctl.contexts import Context, ContextStore
from qshared.client import Client, job_body

pytestmark = [pytest.mark.e2e, on_each_database]

TTL = 4.0
ENV = {
    "WORKER_HEALTH_CHECK_INTERVAL": "1", "WORKER_REGISTRATION_TTL": str(int(TTL)),
    # The watcher's own passes would do the commands' work before them (and take the
    # credit): with an hour between passes, only the commands under test act.
    "FAILOVER_CHECK_INTERVAL": "3600",
}
_ENDPOINT_VARS = ("QSTACK_SCHEDULER_URL", "QSTACK_REGISTRY_URL", "QSTACK_FAILOVER_URL",
                  "QSTACK_TOKEN")


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=3, concurrency=2, env=ENV)


@pytest.fixture(scope="module")
def qctl(stack, tmp_path_factory):
    """qctl(*args, code=0) -> the finished `qctl args...` process, run against a context."""
    config = tmp_path_factory.mktemp("qctl-config")
    ContextStore(config / "contexts.json").put(Context(
        "e2e", stack.scheduler_url, stack.registry_url, stack.token,
        failover_url=stack.services["failover"].url), make_current=True)
    env = {k: v for k, v in os.environ.items() if k not in _ENDPOINT_VARS}
    env.update(QSTACK_CONFIG_DIR=str(config), COLUMNS="250")

    return qctl_runner(env)


def as_json(done: subprocess.CompletedProcess[str]):
    return json.loads(done.stdout)


def worker_id_of(stack, db, name):
    pid = stack.services[name].proc.pid
    return wait_until(lambda: db.value("SELECT id FROM queue_workers WHERE pid = $1", pid),
                      timeout=10, what=f"{name}'s row")


def take_lock(stack, key, ttl_ms, owner="e2e-operator"):
    with Client(stack.scheduler_url, stack.token) as client:
        return client.request("POST", f"/api/v1/locks/{key}",
                              {"owner": owner, "ttl_ms": ttl_ms})


def lock_keys(db):
    return {r["lock_key"] for r in db.fetch("SELECT lock_key FROM distributed_locks")}


def test_list_locks_shows_api_locks_and_leader_leases(stack, db, qctl):
    taken = take_lock(stack, "e2e:list-me", 60_000)
    leases = {"qstack:leader:dispatcher", "qstack:leader:failover"}
    wait_until(lambda: leases <= lock_keys(db), timeout=20, what="both leader leases")

    listed = as_json(qctl("queue", "list-locks", "-o", "json"))["locks"]
    by_key = {lock["key"]: lock for lock in listed}
    assert set(by_key) == lock_keys(db)
    mine = by_key["e2e:list-me"]
    row = db.fetch("SELECT * FROM distributed_locks WHERE lock_key = 'e2e:list-me'")[0]
    assert (mine["owner"], mine["token"], mine["live"]) == ("e2e-operator", row["token"], True)
    assert mine["token"] == taken["token"]
    assert 0 < mine["expires_in_s"] <= 60
    assert all(by_key[k]["live"] for k in leases)

    table = qctl("queue:list-locks").stdout  # the specification's spelling
    assert table.splitlines()[0].split() == ["KEY", "OWNER", "WORKER", "TOKEN", "EXPIRES",
                                             "IN", "LIVE"]
    line = next(li for li in table.splitlines() if li.startswith("e2e:list-me"))
    assert "e2e-operator" in line and str(row["token"]) in line and line.endswith("yes")
    assert "qstack:leader:failover" in table


def test_clear_stale_locks_removes_expired_rows_and_keeps_live_ones(stack, db, qctl):
    db.fetch("INSERT INTO distributed_locks (lock_key, owner, token, acquired_at, expires_at)"
             f" VALUES ('e2e:stale-row', 'gone-owner', $1, {db.ago(600)}, {db.ago(300)})",
             *db.next_tokens(1))
    take_lock(stack, "e2e:short-lease", 50)
    live = take_lock(stack, "e2e:live", 60_000)
    wait_until(lambda: db.value(f"SELECT expires_at < {db.now} FROM distributed_locks"
                                " WHERE lock_key = 'e2e:short-lease'"), timeout=5,
               what="the 50 ms lease to run out")
    listed = {lock["key"]: lock for lock in as_json(qctl("queue", "list-locks", "-o",
                                                         "json"))["locks"]}
    assert not listed["e2e:stale-row"]["live"] and not listed["e2e:short-lease"]["live"]
    assert "expired" in qctl("queue", "list-locks").stdout

    out = qctl("queue:clear-stale-locks").stdout
    assert "stale lock(s)" in out
    assert {"e2e:stale-row", "e2e:short-lease"} <= set(out.split())
    keys = lock_keys(db)
    assert not keys & {"e2e:stale-row", "e2e:short-lease"}
    assert {"e2e:live", "e2e:list-me", "qstack:leader:dispatcher",
            "qstack:leader:failover"} <= keys
    assert db.value("SELECT token FROM distributed_locks WHERE lock_key = 'e2e:live'") == \
        live["token"]

    again = as_json(qctl("queue", "clear-stale-locks", "-o", "json"))
    assert again["cleared"] == len(again["keys"])
    assert not [k for k in again["keys"] if k.startswith("e2e:")]


def test_cleanup_crashed_takes_jobs_back_from_a_stopped_worker(stack, db, qctl):
    ghost = f"e2e-ghost-{uuid.uuid4().hex[:8]}"
    db.fetch("INSERT INTO queue_workers (id, hostname, pid, queues, concurrency, status)"
             " VALUES ($1, 'gone.example', 1, 'orphans', 1, 'stopped')", ghost)
    # jobs of a queue nobody serves, so they stay pending once taken back
    for token in db.next_tokens(3):
        db.fetch("INSERT INTO jobs (queue_name, task_name, status, attempts, worker_id, token,"
                 f" assigned_at) VALUES ('orphans', 'noop', 'assigned', 1, $1, $2, {db.now})",
                 ghost, token)
    jobs = db.fetch("SELECT id, token FROM jobs WHERE worker_id = $1 ORDER BY id", ghost)
    ids = [j["id"] for j in jobs]
    for job in jobs:
        db.fetch("INSERT INTO job_assignments (job_id, token, worker_id, queue_name)"
                 " VALUES ($1, $2, $3, 'orphans')", job["id"], job["token"], ghost)

    report = as_json(qctl("worker", "cleanup-crashed", "-o", "json"))
    assert report["orphans"] == [ghost]
    assert report["jobs_recovered"] == 3 and report["declared_dead"] == []

    rows = db.fetch(f"SELECT status, worker_id FROM jobs WHERE {db.in_list('id', 1)}", ids)
    assert rows == [{"status": "pending", "worker_id": None}] * 3
    outcomes = db.fetch(f"SELECT outcome FROM job_assignments WHERE {db.in_list('job_id', 1)}",
                        ids)
    assert [o["outcome"] for o in outcomes] == ["lost"] * 3
    events = db.fetch("SELECT * FROM failover_events WHERE failed_worker_id = $1", ghost)
    assert [(e["event_type"], e["jobs_recovered"]) for e in events] == [("orphans_recovered", 3)]
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", ghost) == "stopped"

    # nothing left to do: a second run changes nothing and says so in its table
    out = qctl("worker:cleanup-crashed").stdout
    assert out.startswith("crashed-worker clean-up")
    assert re.search(r"orphans taken back from\s+none", out)
    assert db.value("SELECT count(*) FROM failover_events WHERE failed_worker_id = $1",
                    ghost) == 1


def test_forced_failover_recovery_declares_a_paused_worker_dead(stack, db, qctl):
    victim = worker_id_of(stack, db, "worker-1")
    with stack.client() as client:
        ids = client.enqueue_many([job_body("sleep", 0.3) for _ in range(60)])
    wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE worker_id = $1 AND status ="
                                " 'running'", victim), timeout=30, interval=0.01,
               what="the victim to run jobs")
    stack.kill("worker-1", signal.SIGSTOP)
    try:
        wait_until(lambda: db.value(f"SELECT {db.seconds_since('last_heartbeat_at')}"
                                    " FROM queue_workers WHERE id = $1", victim) > TTL + 1,
                   timeout=30, interval=0.2, what="the victim's heartbeat to pass the TTL")
        held = [r["id"] for r in db.fetch(
            "SELECT id FROM jobs WHERE worker_id = $1 AND status IN ('assigned', 'running')",
            victim)]
        # nobody but the command declares it: the watcher's own passes are off
        assert held
        assert db.value("SELECT status FROM queue_workers WHERE id = $1", victim) == "active"

        report = as_json(qctl("worker:failover-recovery", "--force", "-o", "json"))
        assert report["declared_dead"] == [victim]
        assert report["jobs_recovered"] == len(held)

        assert db.value("SELECT status FROM queue_workers WHERE id = $1", victim) == "failed"
        assert db.value("SELECT count(*) FROM jobs WHERE worker_id = $1 AND status IN"
                        " ('assigned', 'running')", victim) == 0
        event = db.fetch("SELECT * FROM failover_events WHERE failed_worker_id = $1", victim)
        assert len(event) == 1
        assert event[0]["event_type"] == "worker_unresponsive"
        assert event[0]["jobs_recovered"] == len(held)
        details = event[0]["details"]
        assert (json.loads(details) if isinstance(details, str) else details)["forced"] is True
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'"
                                    f" AND {db.in_list('id', 1)}", ids) == len(ids),
                   timeout=60, what="every job to succeed on the other workers")
        reran = db.fetch(f"SELECT worker_id FROM jobs WHERE {db.in_list('id', 1)}", held)
        assert victim not in {r["worker_id"] for r in reran}
    finally:
        stack.kill("worker-1", signal.SIGCONT)
    # told on its next heartbeat that it was declared dead, it stops by itself
    assert stack.services["worker-1"].proc.wait(timeout=40) == 0
    assert db.value("SELECT status FROM queue_workers WHERE id = $1", victim) == "failed"


def test_failover_events_lists_the_events(stack, db, qctl):
    rows = db.fetch("SELECT id, event_type, failed_worker_id FROM failover_events"
                    " ORDER BY failover_at DESC, id DESC")
    assert {"orphans_recovered", "worker_unresponsive"} <= {r["event_type"] for r in rows}
    # endpoints given as options rather than through the context
    direct = ("--failover-url", stack.services["failover"].url, "--token", stack.token)
    listed = as_json(qctl("failover", "events", "-o", "json", *direct))["events"]
    assert [(e["id"], e["event_type"], e["failed_worker_id"]) for e in listed] == [
        (r["id"], r["event_type"], r["failed_worker_id"]) for r in rows]

    victim = next(r["failed_worker_id"] for r in rows if r["event_type"] == "worker_unresponsive")
    mine = as_json(qctl("failover:events", "--worker-id", victim, "-o", "json"))["events"]
    assert [e["failed_worker_id"] for e in mine] == [victim]
    assert mine[0]["detection_ms"] > TTL * 1000  # its heartbeat age when declared
    assert [e["id"] for e in as_json(qctl("failover", "events", "-n", "1", "-o",
                                          "json"))["events"]] == [rows[0]["id"]]

    table = qctl("failover", "events").stdout
    assert table.splitlines()[0].split()[:4] == ["ID", "AT", "TYPE", "WORKER"]
    line = next(li for li in table.splitlines() if victim in li)
    assert "worker_unresponsive" in line and "no heartbeat" in line
    assert "no failover events for worker nobody" in qctl(
        "failover", "events", "--worker-id", "nobody").stdout

    wrong = qctl("failover", "events", "--token", "wrong-token", code=4)
    assert wrong.stderr.startswith("error: ")
