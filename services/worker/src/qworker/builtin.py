"""Built-in tasks for demos, tests and benchmarks: noop, sleep, echo, fail, flaky, cpu, block,
crash."""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from qworker.tasks import JobContext, task


class TaskFailed(Exception):
    """Raised by the `fail` and `flaky` tasks on purpose."""


@task
async def noop(payload: Any) -> None:
    """Does nothing."""


@task
async def sleep(payload: Any) -> float:
    """Sleeps `payload` seconds (a number, or {"seconds": n})."""
    seconds = payload.get("seconds", 0) if isinstance(payload, dict) else payload or 0
    await asyncio.sleep(float(seconds))
    return float(seconds)


@task
async def echo(payload: Any) -> Any:
    """Returns the payload as the result."""
    return payload


@task
async def fail(payload: Any, job: JobContext) -> None:
    """Always fails, with the payload's "message" if it has one."""
    message = payload.get("message") if isinstance(payload, dict) else payload
    raise TaskFailed(f"{message or 'failed on purpose'} (attempt {job.attempt})")


@task
async def flaky(payload: Any) -> str:
    """Fails with probability `payload` (a number, or {"p": x}); 0.5 if unset."""
    p = payload.get("p", 0.5) if isinstance(payload, dict) else payload
    if random.random() < float(0.5 if p is None else p):
        raise TaskFailed("flaky task failed this time")
    return "ok"


@task
def cpu(payload: Any) -> int:
    """Burns CPU in a thread for `payload` iterations (a sync task)."""
    n = int(payload or 100_000)
    total = 0
    for i in range(n):
        total += i * i
    return total


@task
async def block(payload: Any) -> float:
    """Blocks the event loop for `payload` seconds (a badly written task): for health tests."""
    seconds = float(payload or 1)
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point
    return seconds


@task
def crash(payload: Any) -> None:
    """Kills the worker process (os._exit): for failover and quarantine tests."""
    os._exit(int(payload or 3))
