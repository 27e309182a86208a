"""The operator actions qtui and qctl use: pause and resume queues, retry and bulk retry or
cancel jobs, throughput, a worker's latest assignments; checked in the database."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from e2e_helpers import qctl_runner, stack_env, wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body

pytestmark = [pytest.mark.e2e, on_each_database]

# Without a wake-up the dispatcher would look again only after 30 s: a resume that runs the
# queue's jobs at once shows that it woke the dispatcher.
POLL = 30.0
QUEUES = ("default", "emails", "bulk", "cli")
FINAL = ("succeeded", "dead", "cancelled")


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=2, concurrency=4, queues=QUEUES,
                       env={"QSTACK_DISPATCH_POLL": str(POLL)})


@pytest.fixture(scope="module")
def registry(stack):
    with httpx.Client(base_url=stack.registry_url, timeout=30,
                      headers={"Authorization": f"Bearer {stack.token}"}) as c:
        yield c


@pytest.fixture(scope="module")
def qctl(stack, tmp_path_factory):
    """qctl(*args, code=0) -> the finished `qctl args...` process, pointed at the stack by the
    environment (an empty config dir: no context gets in the way)."""
    return qctl_runner(stack_env(stack, tmp_path_factory.mktemp("qctl-config")))


def enqueue(stack, n: int, task: str = "noop", **options) -> list[int]:
    with stack.client() as client:
        return client.enqueue_many([job_body(task, **options) for _ in range(n)])


def jobs(db, ids) -> dict[int, dict]:
    return {r["id"]: r for r in db.fetch(f"SELECT * FROM jobs WHERE {db.in_list('id', 1)}",
                                         list(ids))}


def statuses(db, ids) -> dict[int, str]:
    return {i: j["status"] for i, j in jobs(db, ids).items()}


def wait_final(db, ids, timeout: float = 30) -> dict[int, dict]:
    wait_until(lambda: all(s in FINAL for s in statuses(db, ids).values()), timeout=timeout,
               interval=0.1, what=f"jobs {ids} to finish")
    return jobs(db, ids)


def paused(db, queue: str):
    """queue_settings.paused of `queue`: MySQL's BOOLEAN is a TINYINT, read back as 0 or 1."""
    value = db.value("SELECT paused FROM queue_settings WHERE queue_name = $1", queue)
    return bool(value) if db.dialect == "mysql" and value is not None else value


def table_snapshot(db) -> list[tuple]:
    """Every job's changeable fields and every queue setting: to show that nothing changed."""
    rows = db.fetch("SELECT id, status, attempts, max_attempts, run_at, worker_id FROM jobs"
                    " ORDER BY id")
    settings = db.fetch("SELECT * FROM queue_settings ORDER BY queue_name")
    return [tuple(r.values()) for r in rows] + [tuple(r.values()) for r in settings]


def error_of(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]["message"]


# -- pause and resume -------------------------------------------------------------------
def test_a_paused_queue_waits_while_others_run_and_resume_runs_it_at_once(stack, db, http):
    for _ in range(2):  # idempotent
        resp = http.post("/api/v1/queues/emails/pause")
        assert resp.status_code == 200 and resp.json() == {"queue": "emails", "paused": True}
    assert paused(db, "emails") is True

    held = enqueue(stack, 6, queue="emails")  # enqueue is still accepted
    ran = enqueue(stack, 6, queue="default")
    done = wait_final(db, ran)
    assert {j["status"] for j in done.values()} == {"succeeded"}
    time.sleep(1.0)  # several chances to dispatch them: each worker finished jobs meanwhile
    assert set(statuses(db, held).values()) == {"pending"}

    listed = {q["queue"]: q for q in http.get("/api/v1/queues").json()["queues"]}
    assert listed["emails"]["paused"] is True and listed["emails"]["pending"] == 6
    assert listed["default"]["paused"] is False
    assert set(listed["emails"]) == {"queue", "paused", "pending", "scheduled", "assigned",
                                     "running", "succeeded", "failed", "dead", "cancelled",
                                     "oldest_pending_age_s"}
    assert list(listed) == sorted(listed)
    assert listed["emails"]["oldest_pending_age_s"] >= 1.0

    started = time.monotonic()
    resp = http.post("/api/v1/queues/emails/resume")
    assert resp.status_code == 200 and resp.json() == {"queue": "emails", "paused": False}
    done = wait_final(db, held, timeout=POLL / 3)
    assert {j["status"] for j in done.values()} == {"succeeded"}
    assert time.monotonic() - started < POLL / 3  # woken, not polled
    assert http.post("/api/v1/queues/emails/resume").json()["paused"] is False
    assert paused(db, "emails") is False


def test_pausing_a_queue_without_jobs_lists_it(http):
    assert http.post("/api/v1/queues/nothing-yet/pause").json() == {
        "queue": "nothing-yet", "paused": True}
    listed = {q["queue"]: q for q in http.get("/api/v1/queues").json()["queues"]}
    assert listed["nothing-yet"]["paused"] is True and listed["nothing-yet"]["pending"] == 0
    http.post("/api/v1/queues/nothing-yet/resume")


# -- retry ------------------------------------------------------------------------------
def test_retry_of_a_dead_job_runs_it_again(stack, db, http):
    [job_id] = enqueue(stack, 1, task="fail", max_attempts=1)
    dead = wait_final(db, [job_id])[job_id]
    assert (dead["status"], dead["attempts"], dead["max_attempts"]) == ("dead", 1, 1)

    resp = http.post(f"/api/v1/jobs/{job_id}/retry")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    shown = http.get(f"/api/v1/jobs/{job_id}").json()
    assert set(body) == set(shown)  # the shape of GET /api/v1/jobs/{id}
    assert body["id"] == job_id and body["status"] in ("pending", "assigned", "running", "dead")
    assert body["max_attempts"] == 2
    again = wait_final(db, [job_id])[job_id]
    assert (again["status"], again["attempts"], again["max_attempts"]) == ("dead", 2, 2)
    assert "attempt 2" in again["last_error"]
    history = http.get(f"/api/v1/jobs/{job_id}").json()["assignments"]
    assert [a["outcome"] for a in history] == ["dead", "dead"]


def test_retry_of_a_cancelled_job_runs_it(stack, db, http):
    [job_id] = enqueue(stack, 1, delay_s=600)
    assert http.post(f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert http.post(f"/api/v1/jobs/{job_id}/retry").json()["max_attempts"] == 3
    done = wait_final(db, [job_id])[job_id]
    assert (done["status"], done["attempts"]) == ("succeeded", 1)


# -- bulk retry and cancel --------------------------------------------------------------
def test_bulk_retry_by_status_runs_the_dead_jobs_again(stack, db, http):
    dead = enqueue(stack, 3, task="fail", queue="bulk", max_attempts=1)
    fine = enqueue(stack, 1, queue="bulk")
    wait_final(db, dead + fine)
    resp = http.post("/admin/queue/jobs/retry", json={"queue": "bulk", "status": "dead"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"count": 3, "ids": sorted(dead)}
    after = wait_final(db, dead + fine)
    assert all((after[i]["status"], after[i]["attempts"]) == ("dead", 2) for i in dead)
    assert (after[fine[0]]["status"], after[fine[0]]["attempts"]) == ("succeeded", 1)
    # the limit: one at a time, oldest first
    resp = http.post("/admin/queue/jobs/retry", json={"ids": dead, "limit": 1})
    assert resp.json() == {"count": 1, "ids": [min(dead)]}
    wait_final(db, dead)


def test_bulk_cancel_of_delayed_jobs(stack, db, http):
    later = enqueue(stack, 5, queue="bulk", delay_s=600)
    other_task = enqueue(stack, 1, task="echo", queue="bulk", delay_s=600)
    resp = http.post("/admin/queue/jobs/cancel",
                     json={"queue": "bulk", "status": "pending", "task": "noop"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"count": 5, "ids": sorted(later)}
    rows = jobs(db, later + other_task)
    assert all(rows[i]["status"] == "cancelled" and rows[i]["finished_at"] for i in later)
    assert rows[other_task[0]]["status"] == "pending"
    resp = http.post("/admin/queue/jobs/cancel", json={"ids": later + other_task})
    assert resp.json() == {"count": 1, "ids": other_task}  # the others were cancelled already


# -- throughput and a worker's assignments -----------------------------------------------
def test_throughput_shows_outcomes_and_latency_after_a_load(stack, db, http):
    ok = enqueue(stack, 30)
    bad = enqueue(stack, 2, task="fail", max_attempts=1)
    wait_final(db, ok + bad)
    body = http.get("/admin/queue/throughput", params={"seconds": 30}).json()
    assert set(body) == {"seconds", "buckets", "enqueue_to_start_ms"}
    assert body["seconds"] == 30 and len(body["buckets"]) == 30
    ts = [b["t"] for b in body["buckets"]]
    assert ts == [ts[0] + i for i in range(30)] and ts[-1] <= time.time() + 1
    assert all(set(b) == {"t", "succeeded", "failed", "dead"} for b in body["buckets"])
    assert sum(b["succeeded"] for b in body["buckets"]) >= 30
    assert sum(b["dead"] for b in body["buckets"]) >= 2
    latency = body["enqueue_to_start_ms"]
    assert set(latency) == {"p50", "p99", "samples"}
    assert latency["samples"] >= 32 and 0 <= latency["p50"] <= latency["p99"] < 10_000
    default = http.get("/admin/queue/throughput").json()
    assert default["seconds"] == 60 and len(default["buckets"]) == 60


def test_worker_detail_lists_its_latest_assignments(stack, db, registry):
    wait_final(db, enqueue(stack, 80))  # more than 20 for each worker
    for worker in registry.get("/api/v1/workers").json()["workers"]:
        detail = registry.get(f"/api/v1/workers/{worker['id']}").json()
        assert "health_checks" in detail
        shown = detail["assignments"]
        expected = db.fetch("SELECT job_id, token, queue_name, outcome FROM job_assignments"
                            " WHERE worker_id = $1 ORDER BY assigned_at DESC, id DESC LIMIT 20",
                            worker["id"])
        assert len(shown) == min(20, len(expected)) and len(shown) == 20
        assert [(a["job_id"], a["token"], a["queue"], a["outcome"]) for a in shown] == [
            tuple(r.values()) for r in expected]
        assert all(set(a) == {"job_id", "queue", "token", "assigned_at", "started_at",
                              "finished_at", "outcome"} for a in shown)
        assigned = [a["assigned_at"] for a in shown]
        assert assigned == sorted(assigned, reverse=True)
    assert registry.get("/api/v1/workers/no-such-worker").status_code == 404


# -- bad input --------------------------------------------------------------------------
BAD_BULK = [
    ({}, "at least one"),
    ({"limit": 5}, "at least one"),
    ({"queue": "bulk", "limit": 0}, "limit"),
    ({"queue": "bulk", "limit": 10001}, "limit"),
    ({"queue": "bulk", "limit": "many"}, "limit"),
    ({"ids": []}, "ids"),
    ({"ids": [0]}, "ids"),
    ({"ids": "1,2"}, "ids"),
    ({"status": "exploded"}, "status"),
    ({"queue": "bad queue"}, "queue"),
    ({"queue": "bulk", "colour": "red"}, "colour"),
]


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_bad_bulk_requests_are_refused_and_change_nothing(stack, db, http, action):
    enqueue(stack, 2, queue="bulk", delay_s=600)  # something a wrong request could cancel
    dead = enqueue(stack, 1, task="fail", queue="bulk", max_attempts=1)
    wait_final(db, dead)
    before = table_snapshot(db)
    for body, mention in [*BAD_BULK, ({"status": "running"}, action)]:
        message = error_of(http.post(f"/admin/queue/jobs/{action}", json=body), 400)
        assert mention in message, (body, message)
    for raw in (b"", b"{not json"):
        error_of(http.post(f"/admin/queue/jobs/{action}", content=raw,
                           headers={"Content-Type": "application/json"}), 400)
    wrong = "pending" if action == "retry" else "dead"  # a state the action never changes
    assert f"{action} acts on" in error_of(
        http.post(f"/admin/queue/jobs/{action}", json={"status": wrong}), 400)
    no_token = httpx.post(f"{stack.scheduler_url}/admin/queue/jobs/{action}",
                          json={"queue": "bulk"}, timeout=10)
    assert no_token.status_code == 401
    assert table_snapshot(db) == before


def test_bad_single_requests_are_refused_and_change_nothing(stack, db, http):
    [succeeded] = enqueue(stack, 1)
    [pending] = enqueue(stack, 1, delay_s=600)
    wait_final(db, [succeeded])
    before = table_snapshot(db)
    assert "999999999" in error_of(http.post("/api/v1/jobs/999999999/retry"), 404)
    assert "succeeded" in error_of(http.post(f"/api/v1/jobs/{succeeded}/retry"), 409)
    assert "pending" in error_of(http.post(f"/api/v1/jobs/{pending}/retry"), 409)
    error_of(http.post("/api/v1/jobs/abc/retry"), 400)
    error_of(http.post("/api/v1/jobs/0/retry"), 400)
    assert "queue" in error_of(http.post("/api/v1/queues/bad%20name/pause"), 400)
    assert "queue" in error_of(http.post("/api/v1/queues/bad%20name/resume"), 400)
    for seconds in ("0", "3601", "abc", "-5"):
        assert "seconds" in error_of(
            http.get("/admin/queue/throughput", params={"seconds": seconds}), 400)
    for method, path in (("GET", "/api/v1/queues"), ("POST", "/api/v1/queues/bulk/pause"),
                         ("POST", f"/api/v1/jobs/{pending}/retry"),
                         ("GET", "/admin/queue/throughput")):
        assert httpx.request(method, stack.scheduler_url + path, timeout=10).status_code == 401
    assert table_snapshot(db) == before


# -- qctl -------------------------------------------------------------------------------
def test_qctl_queue_list_pause_and_resume(stack, db, qctl):
    out = qctl("queue", "pause", "cli").stdout
    assert "queue cli paused" in out
    assert paused(db, "cli") is True
    held = enqueue(stack, 2, queue="cli")
    listed = {q["queue"]: q for q in json.loads(qctl("queue", "list", "-o", "json").stdout)[
        "queues"]}
    assert listed["cli"]["paused"] is True and listed["emails"]["paused"] is False
    table = qctl("queue:list").stdout  # the specification's spelling works too
    assert table.splitlines()[0].split()[:3] == ["QUEUE", "STATE", "PENDING"]
    line = next(li for li in table.splitlines() if li.startswith("cli "))
    assert line.split()[1] == "paused"
    assert set(statuses(db, held).values()) == {"pending"}  # due, but paused

    assert json.loads(qctl("queue", "resume", "cli", "-o", "json").stdout) == {
        "queue": "cli", "paused": False}
    assert paused(db, "cli") is False
    assert {j["status"] for j in wait_final(db, held, timeout=POLL / 3).values()} == {
        "succeeded"}
    qctl("queue", "pause", "bad name", code=2)  # refused as invalid: a usage error


def test_qctl_job_retry(stack, db, qctl):
    [job_id] = enqueue(stack, 1, task="fail", queue="cli", max_attempts=1)
    wait_final(db, [job_id])
    out = qctl("job", "retry", str(job_id)).stdout
    assert f"job {job_id}" in out and "attempt 2 of 2" in out
    assert jobs(db, [job_id])[job_id]["max_attempts"] == 2
    again = wait_final(db, [job_id])[job_id]
    assert (again["status"], again["attempts"]) == ("dead", 2)
    assert json.loads(qctl("job", "retry", str(job_id), "-o", "json").stdout)["id"] == job_id
    wait_final(db, [job_id])
    [pending] = enqueue(stack, 1, queue="cli", delay_s=600)
    assert "only dead or cancelled" in qctl("job", "retry", str(pending), code=1).stderr
    assert "999999999" in qctl("job", "retry", "999999999", code=5).stderr
    assert statuses(db, [pending]) == {pending: "pending"}
    qctl("job", "cancel", str(pending))


def test_qctl_job_retry_all_and_cancel_all(stack, db, qctl):
    dead = enqueue(stack, 3, task="fail", queue="cli", max_attempts=1)
    wait_final(db, dead)
    # the oldest two dead jobs of the queue (an earlier test may have left one there)
    oldest = db.fetch("SELECT id, attempts FROM jobs WHERE queue_name = 'cli'"
                      " AND status = 'dead' ORDER BY id LIMIT 2")
    out = qctl("job", "retry-all", "--queue", "cli", "--status", "dead", "--limit", "2").stdout
    assert "retried 2 job(s)" in out
    after = wait_final(db, [*dead, *(r["id"] for r in oldest)])
    for r in oldest:  # each ran once more (and failed again: `fail` always does)
        assert (after[r["id"]]["status"], after[r["id"]]["attempts"]) == ("dead", r["attempts"] + 1)
    assert dead[2] in {r["id"] for r in oldest} or after[dead[2]]["attempts"] == 1
    result = json.loads(qctl("job", "retry-all", "--id", str(dead[2]), "-o", "json").stdout)
    assert result == {"count": 1, "ids": [dead[2]]}
    wait_final(db, dead)

    later = enqueue(stack, 4, queue="cli", delay_s=600)
    out = qctl("job:cancel-all", "--queue", "cli", "--status", "pending", "--task",
               "noop").stdout
    assert "cancelled 4 job(s)" in out
    assert set(statuses(db, later).values()) == {"cancelled"}
    assert "cancelled 0 job(s)" in qctl("job", "cancel-all", "--queue", "cli").stdout

    before = table_snapshot(db)
    assert "--queue" in qctl("job", "cancel-all", code=2).stderr  # no filter: refused
    qctl("job", "retry-all", code=2)
    qctl("job", "retry-all", "--status", "pending", code=2)  # not a retryable state
    qctl("job", "cancel-all", "--queue", "cli", "--limit", "0", code=2)
    assert table_snapshot(db) == before


def test_qctl_with_a_wrong_token_changes_nothing(db, qctl):
    before = table_snapshot(db)
    for args in (("queue", "pause", "cli"), ("job", "cancel-all", "--queue", "cli"),
                 ("queue", "list")):
        assert "token" in qctl(*args, "--token", "wrong", code=4).stderr
    assert table_snapshot(db) == before
