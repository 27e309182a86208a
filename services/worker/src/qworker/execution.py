"""Runs one job attempt and turns what happened into an Outcome (no I/O of its own)."""

from __future__ import annotations

import asyncio
import functools
import time
import traceback
from concurrent.futures import Executor

import orjson

from qshared.storage.base import Assignment, Outcome
from qworker.backoff import retry_delay
from qworker.tasks import JobContext, get_task, task_names


class UnknownTask(Exception):
    """The job names a task this worker does not have."""


async def execute(
    a: Assignment, *, worker_id: str, started: float, executor: Executor | None,
    retry_base: float, retry_cap: float,
) -> Outcome:
    """Run the task with the job's timeout.

    Returns:
        A succeeded outcome, or a failed one: `pending` with a retry delay while attempts
        remain, `dead` with the error kept once they are used up.
    """
    try:
        t = get_task(a.task_name)
        if t is None:
            raise UnknownTask(
                f"no task {a.task_name!r} on worker {worker_id} (known: {', '.join(task_names())})"
            )
        kwargs = {}
        if t.wants_job:
            kwargs["job"] = JobContext(
                a.id, a.queue_name, a.task_name, a.attempts, a.max_attempts, worker_id
            )
        if t.is_async:
            coro = t.fn(a.payload, **kwargs)
        else:
            loop = asyncio.get_running_loop()
            coro = loop.run_in_executor(executor, functools.partial(t.fn, a.payload, **kwargs))
        try:
            result = await asyncio.wait_for(coro, timeout=a.timeout)
        except TimeoutError:
            raise TimeoutError(f"job exceeded its timeout of {a.timeout:g} s") from None
        try:
            result_json = orjson.dumps(result).decode()
        except TypeError as exc:
            raise TypeError(f"task result is not JSON: {exc}") from None
        return Outcome(a.id, a.token, "succeeded", started, time.time(), result_json)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}\n" + "".join(
            traceback.format_exception(exc, limit=-8)
        )
        finished = time.time()
        if a.attempts < a.max_attempts:
            delay = retry_delay(a.attempts, retry_base, retry_cap)
            return Outcome(a.id, a.token, "pending", started, finished, None, error, delay)
        return Outcome(a.id, a.token, "dead", started, finished, None, error)
