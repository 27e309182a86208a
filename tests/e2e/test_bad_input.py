"""Bad input gets a 4xx with the error body naming the problem, and writes nothing."""

from __future__ import annotations

import httpx
import pytest
from stack_fixtures import on_each_database

pytestmark = [pytest.mark.e2e, on_each_database]


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=1)


def job_count(db) -> int:
    return db.value("SELECT count(*) FROM jobs")


BIG = "x" * (1024 * 1024 + 10)

CASES = [
    ("malformed JSON", "/api/v1/jobs", b'{"task": "noop",', 400, "malformed JSON"),
    ("empty body", "/api/v1/jobs", b"", 400, "empty"),
    ("unknown field", "/api/v1/jobs", b'{"task": "noop", "colour": "red"}', 400, "colour"),
    ("wrong type", "/api/v1/jobs", b'{"task": "noop", "priority": "high"}', 400, "priority"),
    ("missing task", "/api/v1/jobs", b'{"payload": 1}', 400, "task"),
    ("negative delay", "/api/v1/jobs", b'{"task": "noop", "delay_s": -5}', 400, "delay_s"),
    ("zero attempts", "/api/v1/jobs", b'{"task": "noop", "max_attempts": 0}', 400, "max_attempts"),
    ("naive run_at", "/api/v1/jobs", b'{"task": "noop", "run_at": "2030-01-01T00:00:00"}', 400,
     "time zone"),
    ("payload over 1 MiB", "/api/v1/jobs", b'{"task": "noop", "payload": "' + BIG.encode() + b'"}',
     413, "limit"),
    ("batch not a list", "/api/v1/jobs/batch", b'{"jobs": {"task": "noop"}}', 400, "jobs"),
    ("empty batch", "/api/v1/jobs/batch", b'{"jobs": []}', 400, "jobs"),
    # one bad job makes the whole batch fail: the good one before it is not written either
    ("bad job in batch", "/api/v1/jobs/batch",
     b'{"jobs": [{"task": "noop"}, {"task": "noop", "delay_s": -1}]}', 400, "jobs.1.delay_s"),
    ("big payload in batch", "/api/v1/jobs/batch",
     b'{"jobs": [{"task": "noop"}, {"task": "noop", "payload": "' + BIG.encode() + b'"}]}', 413,
     "jobs.1.payload"),
]


@pytest.mark.parametrize(("path", "body", "status", "mention"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_body_is_refused_and_nothing_is_written(http, db, path, body, status, mention):
    before = job_count(db)
    resp = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"code", "message"}
    assert mention in error["message"]
    assert "Traceback" not in resp.text
    assert job_count(db) == before


def test_unknown_and_malformed_job_ids(http):
    resp = http.get("/api/v1/jobs/999999999")
    assert resp.status_code == 404 and "999999999" in resp.json()["error"]["message"]
    resp = http.get("/api/v1/jobs/abc")
    assert resp.status_code == 400 and "job_id" in resp.json()["error"]["message"]
    resp = http.post("/api/v1/jobs/999999999/cancel")
    assert resp.status_code == 404
    resp = http.get("/api/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic abc"}],
                         ids=["missing token", "wrong token", "wrong scheme"])
def test_missing_or_wrong_token_is_401_and_writes_nothing(stack, db, headers):
    before = job_count(db)
    for url in (stack.scheduler_url + "/api/v1/jobs", stack.registry_url + "/api/v1/workers"):
        resp = httpx.post(url, json={"task": "noop"}, headers=headers, timeout=10)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] == "unauthorized"
    resp = httpx.get(stack.scheduler_url + "/admin/queue/stats", headers=headers, timeout=10)
    assert resp.status_code == 401
    assert job_count(db) == before


def test_health_needs_no_token(stack):
    assert httpx.get(stack.scheduler_url + "/health", timeout=10).status_code == 200
    assert httpx.get(stack.registry_url + "/health", timeout=10).status_code == 200


def test_registry_refuses_bad_registrations(stack):
    headers = {"Authorization": f"Bearer {stack.token}"}
    resp = httpx.post(stack.registry_url + "/api/v1/workers", headers=headers, timeout=10,
                      json={"id": "w", "hostname": "h", "pid": 1, "queues": [], "concurrency": 0})
    assert resp.status_code == 400
    message = resp.json()["error"]["message"]
    assert "queues" in message and "concurrency" in message
    resp = httpx.post(stack.registry_url + "/api/v1/workers/nobody/heartbeat", headers=headers,
                      json={"health": {}}, timeout=10)
    assert resp.status_code == 404
