"""Retention end to end: the failover leader's schedule deletes exactly the old rows of a
running stack (and counts them on /metrics); each `qctl queue cleanup-*` command and
`qctl queue retention [--run]` does what it says, checked in the database; bad input is
refused with a clear error and deletes nothing."""

from __future__ import annotations

import itertools
import json
import re

import httpx
import pytest
from e2e_helpers import Db, qctl_runner, stack_env, wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body

pytestmark = [pytest.mark.e2e, on_each_database]

FINAL = ("succeeded", "dead", "cancelled")
RETENTION = "/admin/queue/failover/retention"
_serial = itertools.count(1)  # planted failover events' unique event types


# -- helpers ----------------------------------------------------------------------------
def enqueue(stack, n: int, task: str = "noop", **options) -> list[int]:
    with stack.client() as client:
        return client.enqueue_many([job_body(task, **options) for _ in range(n)])


def wait_final(db: Db, ids: list[int]) -> None:
    wait_until(lambda: {r["status"] for r in db.fetch(
        f"SELECT status FROM jobs WHERE {db.in_list('id', 1)}", ids)} <= set(FINAL), timeout=30,
        interval=0.1, what=f"jobs {ids} to finish")


def age(db: Db, table: str, column: str, ids: list[int], days: float) -> None:
    db.fetch(f"UPDATE {table} SET {column} = {db.ago(days * 86400)} "
             f"WHERE {db.in_list('id', 1)}", ids)


def age_jobs(db: Db, ids: list[int], days: float) -> None:
    """Jobs created and finished `days` ago (a job finished then was created before)."""
    age(db, "jobs", "created_at", ids, days + 0.01)
    age(db, "jobs", "finished_at", [i for i in ids if db.value(
        "SELECT finished_at FROM jobs WHERE id = $1", i) is not None], days)


def present(db: Db, table: str, ids: list[int]) -> set[int]:
    return {r["id"] for r in db.fetch(f"SELECT id FROM {table} WHERE {db.in_list('id', 1)}",
                                      ids)}


def health_check_ids(db: Db, n: int) -> list[int]:
    """The ids of the latest n health checks the stack's worker wrote (waiting for them)."""
    def latest() -> list[int] | None:
        rows = db.fetch("SELECT id FROM worker_health_checks ORDER BY id DESC LIMIT $1", n)
        return sorted(r["id"] for r in rows) if len(rows) == n else None

    return wait_until(latest, timeout=30, what=f"{n} health checks")


def failover_events(db: Db, *days: float) -> list[int]:
    """Failover events `days` old each; their ids (each found by its event type, unique:
    MySQL has no RETURNING)."""
    ids = []
    for d in days:
        kind = f"retention_test_{next(_serial)}"
        db.fetch("INSERT INTO failover_events (event_type, failover_at, details) "
                 f"VALUES ($1, {db.ago(d * 86400)}, '{{}}')", kind)
        ids.append(db.value("SELECT id FROM failover_events WHERE event_type = $1", kind))
    return ids


def stale_assignment(db: Db, job_id: int) -> int:
    """An open assignment row of a finished job under a token it no longer has; its id
    (looked up by job and token, which no other row has: MySQL has no RETURNING)."""
    db.fetch("INSERT INTO job_assignments (job_id, token, worker_id, queue_name) "
             "VALUES ($1, $2, 'gone-worker', 'default')", job_id, -job_id)
    return db.value("SELECT id FROM job_assignments WHERE job_id = $1 AND token = $2",
                    job_id, -job_id)


def assignment_ids(db: Db, job_ids: list[int]) -> set[int]:
    return {r["id"] for r in db.fetch(
        f"SELECT id FROM job_assignments WHERE {db.in_list('job_id', 1)}", job_ids)}


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}{{{re.escape(selector)}}} (\S+)$", text, re.M)
    assert m, f"{name}{{{selector}}} not on /metrics"
    return float(m.group(1))


def stack_qctl(stack, tmp_path_factory):
    return qctl_runner(stack_env(stack, tmp_path_factory.mktemp("qctl-config")))


def failover_client(stack) -> httpx.Client:
    return httpx.Client(base_url=stack.services["failover"].url, timeout=60,
                        headers={"Authorization": f"Bearer {stack.token}"})


# -- (a) the schedule -------------------------------------------------------------------
SCHEDULED = {"QSTACK_RETENTION_INTERVAL": "1", "QSTACK_RETENTION_HEALTH_CHECKS_DAYS": "1",
             "QSTACK_RETENTION_FAILOVER_EVENTS_DAYS": "1", "QSTACK_RETENTION_JOBS_DAYS": "1",
             "QSTACK_RETENTION_DEAD_JOBS_DAYS": "2", "WORKER_HEALTH_CHECK_INTERVAL": "0.5"}


def test_the_leader_deletes_the_old_rows_on_schedule_and_keeps_the_fresh(start_stack, db):
    stack = start_stack(workers=1, concurrency=4, queues=("default",), env=SCHEDULED)
    checks = health_check_ids(db, 6)
    done = enqueue(stack, 6)
    dead = enqueue(stack, 3, task="fail", max_attempts=1)
    gone = enqueue(stack, 1)
    waiting = enqueue(stack, 1, delay_s=3600)
    wait_final(db, done + dead + gone)
    old_done, fresh_done = done[:3], done[3:]
    old_dead, kept_dead, fresh_dead = dead[:1], dead[1:2], dead[2:]
    old_assignments = assignment_ids(db, old_done + old_dead)
    gone_assignment = assignment_ids(db, gone)
    kept_assignments = assignment_ids(db, fresh_done + kept_dead + fresh_dead)
    assert len(old_assignments) == 4 and len(gone_assignment) == 1

    # plant: old rows of every kind, and fresh ones beside them
    old_checks, fresh_checks = checks[:3], checks[3:]
    age(db, "worker_health_checks", "checked_at", old_checks, 1.5)
    old_event, fresh_event = failover_events(db, 1.5, 0.5)
    age_jobs(db, old_done, 1.5)
    age_jobs(db, old_dead, 2.5)
    age_jobs(db, kept_dead, 1.5)  # dead jobs are kept 2 days
    age_jobs(db, waiting, 3)  # pending, however old
    stale = stale_assignment(db, fresh_done[0])
    db.fetch(f"DELETE FROM jobs WHERE {db.in_list('id', 1)}", gone)

    wait_until(lambda: not (present(db, "worker_health_checks", old_checks)
                            or present(db, "failover_events", [old_event])
                            or present(db, "jobs", old_done + old_dead)
                            or present(db, "job_assignments",
                                       [*old_assignments, *gone_assignment])
                            or db.value("SELECT outcome IS NULL FROM job_assignments "
                                        "WHERE id = $1", stale)),
               timeout=30, interval=0.2, what="the schedule to delete the old rows")
    assert present(db, "worker_health_checks", fresh_checks) == set(fresh_checks)
    assert present(db, "failover_events", [fresh_event]) == {fresh_event}
    assert present(db, "jobs", fresh_done + kept_dead + fresh_dead + waiting) == set(
        fresh_done + kept_dead + fresh_dead + waiting)
    assert present(db, "job_assignments", list(kept_assignments)) == kept_assignments
    closed = db.fetch("SELECT outcome, finished_at FROM job_assignments WHERE id = $1", stale)
    assert closed[0]["outcome"] == "orphaned" and closed[0]["finished_at"] is not None

    with failover_client(stack) as failover:
        text = failover.get("/metrics").text
        assert metric(text, "qstack_retention_deleted_total", table="worker_health_checks") >= 3
        assert metric(text, "qstack_retention_deleted_total", table="failover_events") >= 1
        assert metric(text, "qstack_retention_deleted_total", table="jobs") >= 4
        assert metric(text, "qstack_retention_deleted_total", table="job_assignments") >= 1
        assert metric(text, "qstack_retention_runs_total", result="ok") >= 1
        assert metric(text, "qstack_retention_runs_total", result="failed") == 0
        state = failover.get(RETENTION).json()
    assert state["policy"] == {"interval_s": 1, "health_checks_days": 1,
                               "failover_events_days": 1, "jobs_days": 1, "dead_jobs_days": 2}
    assert state["scheduled"] is True and 0 <= state["next_run_in_s"] <= 1
    last = state["last_run"]
    assert (last["trigger"], last["error"], last["skipped"]) == ("schedule", None, [])
    assert set(last["deleted"]) == {"worker_health_checks", "failover_events",
                                    "job_assignments", "jobs"}
    # runs go on each interval
    with failover_client(stack) as failover:
        wait_until(lambda: failover.get(RETENTION).json()["last_run"]["started_at"]
                   != last["started_at"], timeout=10, what="the next scheduled run")


# -- (b) the qctl commands --------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(start_stack):
    """A stack without the schedule (QSTACK_RETENTION_INTERVAL=0): only the commands delete."""
    return start_stack(workers=1, concurrency=4, queues=("default",),
                       env={"QSTACK_RETENTION_INTERVAL": "0"})


@pytest.fixture(scope="module")
def qctl(stack, tmp_path_factory):
    return stack_qctl(stack, tmp_path_factory)


def test_cleanup_health_checks_deletes_those_older_than_days(stack, db, qctl):
    checks = health_check_ids(db, 4)
    age(db, "worker_health_checks", "checked_at", checks[:2], 40)
    age(db, "worker_health_checks", "checked_at", checks[2:3], 20)
    done = qctl("queue:cleanup-health-checks", "--days=30")  # the specification's line
    assert re.search(r"worker_health_checks\s+2\s+30 days", done.stdout), done.stdout
    assert present(db, "worker_health_checks", checks) == set(checks[2:])
    again = json.loads(qctl("queue", "cleanup-health-checks", "--days", "30", "-o", "json").stdout)
    assert again == {"table": "worker_health_checks", "deleted": 0, "older_than_days": 30}


def test_cleanup_failover_events_deletes_those_older_than_days(stack, db, qctl):
    old, recent, fresh = failover_events(db, 100, 80, 0)
    result = json.loads(qctl("queue:cleanup-failover-events", "--days=90", "-o", "json").stdout)
    assert result == {"table": "failover_events", "deleted": 1, "older_than_days": 90}
    assert present(db, "failover_events", [old, recent, fresh]) == {recent, fresh}
    # fractions of a day
    result = json.loads(qctl("queue", "cleanup-failover-events", "--days", "79.5",
                             "-o", "json").stdout)
    assert result["deleted"] == 1 and present(db, "failover_events", [recent, fresh]) == {fresh}


def test_cleanup_orphaned_assignments_deletes_and_closes_but_keeps_live_ones(stack, db, qctl):
    done = enqueue(stack, 2)
    wait_final(db, done)
    live = enqueue(stack, 1, task="sleep", payload={"seconds": 8})
    wait_until(lambda: db.value("SELECT status FROM jobs WHERE id = $1", live[0]) == "running",
               timeout=30, what="a running job")
    [live_row] = assignment_ids(db, live)
    gone_rows = assignment_ids(db, done[:1])
    stale = stale_assignment(db, done[1])
    db.fetch("DELETE FROM jobs WHERE id = $1", done[0])

    out = qctl("queue:cleanup-orphaned-assignments").stdout
    assert re.search(r"job_assignments\s+1\s+1", out), out
    assert not present(db, "job_assignments", list(gone_rows))
    row = db.fetch("SELECT outcome, finished_at FROM job_assignments WHERE id = $1", stale)[0]
    assert row["outcome"] == "orphaned" and row["finished_at"] is not None
    live_now = db.fetch("SELECT outcome, finished_at FROM job_assignments WHERE id = $1",
                        live_row)[0]
    assert (live_now["outcome"], live_now["finished_at"]) == (None, None)
    assert json.loads(qctl("queue", "cleanup-orphaned-assignments", "-o", "json").stdout) == {
        "table": "job_assignments", "deleted": 0, "closed": 0}
    wait_final(db, live)
    assert db.value("SELECT outcome FROM job_assignments WHERE id = $1", live_row) == "succeeded"


def test_cleanup_jobs_deletes_finished_jobs_by_status_and_age(stack, db, qctl):
    done = enqueue(stack, 3)
    dead = enqueue(stack, 2, task="fail", max_attempts=1)
    with stack.client() as client:
        cancelled = enqueue(stack, 1, delay_s=3600)
        client.cancel(cancelled[0])
    waiting = enqueue(stack, 1, delay_s=3600)
    wait_final(db, done + dead + cancelled)
    age_jobs(db, done[:2] + dead + cancelled + waiting, 10)
    old_rows = assignment_ids(db, done[:2])

    out = qctl("queue", "cleanup-jobs", "--days", "7").stdout
    assert re.search(r"jobs\s+succeeded,cancelled\s+3\s+7 days", out), out
    assert present(db, "jobs", done + dead + cancelled + waiting) == {done[2], *dead, *waiting}
    assert not present(db, "job_assignments", list(old_rows))
    assert assignment_ids(db, done[2:] + dead)  # the kept jobs keep theirs

    result = json.loads(qctl("queue:cleanup-jobs", "--days=7", "--status", "dead",
                             "--status", "succeeded", "-o", "json").stdout)
    assert result == {"table": "jobs", "deleted": 2, "older_than_days": 7,
                      "statuses": ["succeeded", "dead"]}
    assert present(db, "jobs", done + dead + waiting) == {done[2], *waiting}


def test_retention_shows_the_policy_and_runs_it_now(stack, db, qctl):
    state = json.loads(qctl("queue", "retention", "-o", "json").stdout)
    assert state["policy"] == {"interval_s": 0, "health_checks_days": 30,
                               "failover_events_days": 90, "jobs_days": 7,
                               "dead_jobs_days": 30}
    assert (state["scheduled"], state["next_run_in_s"]) == (False, None)
    shown = qctl("queue", "retention").stdout
    assert re.search(r"schedule\s+off", shown) and re.search(r"jobs \(dead\)\s+30 days", shown)

    done = enqueue(stack, 2)
    wait_final(db, done)
    age_jobs(db, done[:1], 8)
    old_event, fresh_event = failover_events(db, 91, 89)
    run = json.loads(qctl("queue", "retention", "--run", "-o", "json").stdout)
    assert (run["trigger"], run["error"], run["skipped"]) == ("manual", None, [])
    assert run["deleted"]["jobs"] == 1 and run["deleted"]["failover_events"] == 1
    assert present(db, "jobs", done) == {done[1]}
    assert present(db, "failover_events", [old_event, fresh_event]) == {fresh_event}
    last = json.loads(qctl("queue:retention", "-o", "json").stdout)["last_run"]
    assert last == run
    table = qctl("queue", "retention", "--run").stdout
    assert re.search(r"jobs\s+0", table) and "retention run" in table


# -- (c) bad input ----------------------------------------------------------------------
def snapshot(db: Db, top_check: int) -> dict[str, set[int]]:
    """The ids in the cleaned tables (health checks up to `top_check`: the worker keeps
    writing new ones)."""
    ids = {t: {r["id"] for r in db.fetch(f"SELECT id FROM {t}")}
           for t in ("failover_events", "jobs", "job_assignments")}
    ids["worker_health_checks"] = {r["id"] for r in db.fetch(
        "SELECT id FROM worker_health_checks WHERE id <= $1", top_check)}
    return ids


def plant_old_rows(db: Db) -> int:
    """Rows every clean-up would delete; returns the newest health check id."""
    failover_events(db, 1000)
    checks = health_check_ids(db, 1)
    age(db, "worker_health_checks", "checked_at", checks, 1000)
    return checks[-1]


@pytest.mark.parametrize(("args", "needle"), [
    (("queue", "cleanup-health-checks", "--days", "-1"), "-1 is not between 0 and"),
    (("queue", "cleanup-health-checks", "--days", "abc"), "'abc' is not a number of days"),
    (("queue:cleanup-failover-events",), "Missing option '--days'"),
    (("queue", "cleanup-jobs", "--days", "1", "--status", "running"),
     "'running' is not one of"),
])
def test_bad_options_are_refused_and_delete_nothing(stack, db, qctl, args, needle):
    top = plant_old_rows(db)
    before = snapshot(db, top)
    done = qctl(*args, code=2)
    assert needle in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert snapshot(db, top) == before


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("health-checks", {}, "days: Field required"),
    ("health-checks", {"days": -1}, "days: Input should be greater than or equal to 0"),
    ("failover-events", {"days": "abc"}, "days: Input should be a valid number"),
    ("failover-events", {"days": 1e9}, "days: Input should be less than or equal to 36500"),
    ("jobs", {"days": 1, "statuses": ["succeeded", "running"]},
     "'running' is not a finished state"),
    ("jobs", {"days": 1, "status": "dead"}, "status: Extra inputs are not permitted"),
    ("orphaned-assignments", {"older": 1}, "older: Extra inputs are not permitted"),
])
def test_bad_requests_are_400s_naming_the_problem(stack, db, path, body, needle):
    top = plant_old_rows(db)
    before = snapshot(db, top)
    with failover_client(stack) as failover:
        resp = failover.post(f"/admin/queue/failover/cleanup/{path}", json=body)
        bad_json = failover.post("/admin/queue/failover/cleanup/jobs", content=b"{days: 1}",
                                 headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": {"code": "invalid_request", "message": resp.json()["error"][
        "message"]}}
    assert needle in resp.json()["error"]["message"]
    assert bad_json.status_code == 400 and "malformed JSON" in bad_json.json()["error"]["message"]
    assert snapshot(db, top) == before
