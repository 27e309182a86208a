"""One job attempt: success, retry, dead, timeout, unknown task, sync tasks in threads."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson

import qworker.builtin  # noqa: F401
from qshared.storage.base import Assignment
from qworker import task
from qworker.execution import execute

NOW = datetime.now(UTC)


def assignment(task_name, payload=None, attempts=1, max_attempts=3, timeout=5.0):
    return Assignment(42, 7, "default", task_name, payload, 0, attempts, max_attempts,
                      timeout, NOW, NOW)


async def run(a, executor=None):
    return await execute(a, worker_id="w1", started=time.time(), executor=executor,
                         retry_base=1.0, retry_cap=60.0)


async def test_success_keeps_the_result():
    out = await run(assignment("echo", {"x": [1, 2]}))
    assert (out.status, out.token) == ("succeeded", 7)
    assert orjson.loads(out.result_json) == {"x": [1, 2]}


async def test_failure_with_attempts_left_is_a_retry_with_delay():
    out = await run(assignment("fail", {"message": "boom"}, attempts=1, max_attempts=3))
    assert out.status == "pending"
    assert 0.5 <= out.retry_in <= 1.0
    assert "TaskFailed: boom (attempt 1)" in out.error


async def test_last_attempt_failure_is_dead_with_error_kept():
    out = await run(assignment("fail", None, attempts=3, max_attempts=3))
    assert out.status == "dead"
    assert "failed on purpose" in out.error


async def test_timeout_is_a_failure_naming_the_limit():
    out = await run(assignment("sleep", 5, timeout=0.05, attempts=3, max_attempts=3))
    assert out.status == "dead"
    assert "timeout of 0.05 s" in out.error


async def test_unknown_task_names_the_known_ones():
    out = await run(assignment("no_such_task", attempts=3, max_attempts=3))
    assert out.status == "dead"
    assert "no task 'no_such_task'" in out.error and "noop" in out.error


async def test_sync_task_runs_in_a_thread_and_gets_the_job_context():
    seen = {}

    @task(name="test.sync_ctx")
    def sync_ctx(payload, job):
        seen["thread"] = threading.current_thread().name
        return {"id": job.id, "attempt": job.attempt, "payload": payload}

    with ThreadPoolExecutor(2, thread_name_prefix="task") as pool:
        out = await run(assignment("test.sync_ctx", "p"), executor=pool)
    assert out.status == "succeeded"
    assert orjson.loads(out.result_json) == {"id": 42, "attempt": 1, "payload": "p"}
    assert seen["thread"].startswith("task")


async def test_non_json_result_fails_clearly():
    @task(name="test.bad_result")
    async def bad_result(payload):
        return object()

    out = await run(assignment("test.bad_result", attempts=3, max_attempts=3))
    assert out.status == "dead" and "not JSON" in out.error
