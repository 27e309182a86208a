"""The task registry and the `@task` decorator for user code."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a task may know about its job: the id doubles as an idempotency key."""

    id: int
    queue: str
    task: str
    attempt: int
    max_attempts: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class Task:
    """A registered task: async functions run on the loop, sync ones in a thread."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    wants_job: bool


_REGISTRY: dict[str, Task] = {}


def task(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register a function as a task: `@task` or `@task(name="emails.send")`.

    The function takes the job's payload; if it has a parameter named `job`, it also gets
    the JobContext.
    """

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        task_name = name or f.__name__
        params = inspect.signature(f).parameters
        _REGISTRY[task_name] = Task(
            task_name, f, asyncio.iscoroutinefunction(f), "job" in params
        )
        return f

    return register(fn) if fn is not None else register


def get_task(name: str) -> Task | None:
    """The task registered under `name`, or None."""
    return _REGISTRY.get(name)


def task_names() -> list[str]:
    """Every registered task name, sorted."""
    return sorted(_REGISTRY)
