"""Shared fixtures: backends resolved once per session, a fresh schema per test, factories."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from backends import (
    DSN_ENV,
    REQUIRE_ENV,
    BackendRegistry,
    mysql_database,
    pg_schema,
    storage_backends,
)
from stack_fixtures import (  # noqa: F401  (e2e and chaos fixtures)
    db,
    e2e_backend,
    e2e_db_url,
    e2e_server_dsn,
    http,
    start_stack,
)

from qshared.storage import open_storage
from qshared.storage.base import NewJob, Outcome, PendingJob, Storage

_REGISTRY = pytest.StashKey[BackendRegistry]()

# The fixture that yields a fresh, migrated place for one test, per storage backend.
_URL_FIXTURE = {"postgres": "pg_url", "mysql": "mysql_url"}
_UNMIGRATED_FIXTURE = {"postgres": "pg_url_unmigrated", "mysql": "mysql_url_unmigrated"}


# -- backends ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def backend_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendRegistry]:
    """Resolves each backend on first use and stops whatever it started at session end."""
    registry = BackendRegistry(lambda name: tmp_path_factory.mktemp(name))
    request.config.stash[_REGISTRY] = registry
    try:
        yield registry
    finally:
        registry.close()


def pytest_report_header(config: pytest.Config) -> str:
    planned = ", ".join(
        f"{name} from ${env}" if os.environ.get(env) else f"{name} auto"
        for name, env in DSN_ENV.items()
    )
    return f"qstack backends: {planned}; required: {os.environ.get(REQUIRE_ENV) or 'none'}"


# Under pytest-xdist each worker process resolves the backends it uses; the controller
# prints what they found (a backend one worker used beats "not used" from another).
_WORKER_SUMMARIES = pytest.StashKey[list[list[str]]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    registry = session.config.stash.get(_REGISTRY, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if registry is not None and workeroutput is not None:
        workeroutput["qstack_backends"] = registry.summary()


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook (the controller's side)
def pytest_testnodedown(node: Any, error: Any) -> None:
    lines = getattr(node, "workeroutput", {}).get("qstack_backends")
    if lines:
        node.config.stash.setdefault(_WORKER_SUMMARIES, []).append(lines)


def _merged(summaries: list[list[str]]) -> list[str]:
    best: dict[str, str] = {}
    for lines in summaries:
        for line in lines:
            name = line.split(":", 1)[0].split(" ", 1)[0]
            if name not in best or "not used" in best[name]:
                best[name] = line
    return list(best.values())


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summaries = list(config.stash.get(_WORKER_SUMMARIES, []))
    registry = config.stash.get(_REGISTRY, None)
    if registry is not None:
        summaries.append(registry.summary())
    if not summaries:
        return
    terminalreporter.write_sep("-", "qstack test backends")
    for line in _merged(summaries):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def pg_dsn(backend_registry: BackendRegistry) -> str:
    """A server-level PostgreSQL DSN (env, testcontainers or embedded pgserver)."""
    return backend_registry.require("postgres")


@pytest.fixture(scope="session")
def mysql_dsn(backend_registry: BackendRegistry) -> str:
    """A server-level MySQL/MariaDB DSN; skips (or fails when required) without one."""
    return backend_registry.require("mysql")


@pytest.fixture(scope="session")
def redis_dsn(backend_registry: BackendRegistry) -> str:
    """A Redis URL; skips (or fails when required) without one."""
    return backend_registry.require("redis")


@pytest.fixture
async def pg_url(pg_dsn: str) -> AsyncIterator[str]:
    """A DSN for a fresh, migrated schema of this test's own, dropped afterwards."""
    async with pg_schema(pg_dsn, migrate=True) as url:
        yield url


@pytest.fixture
async def pg_url_unmigrated(pg_dsn: str) -> AsyncIterator[str]:
    """Like pg_url, but the schema is empty (for migration tests)."""
    async with pg_schema(pg_dsn, migrate=False) as url:
        yield url


@pytest.fixture
async def mysql_url(mysql_dsn: str) -> AsyncIterator[str]:
    """A DSN for a fresh, migrated database of this test's own, dropped afterwards."""
    async with mysql_database(mysql_dsn, migrate=True) as url:
        yield url


@pytest.fixture
async def mysql_url_unmigrated(mysql_dsn: str) -> AsyncIterator[str]:
    """Like mysql_url, but the database is empty."""
    async with mysql_database(mysql_dsn, migrate=False) as url:
        yield url


# -- storage, over every backend that implements it --------------------------------------
@pytest.fixture(params=storage_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: 'postgres' (and 'mysql' once qshared has it)."""
    return request.param


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The migrated per-test URL of the backend under test."""
    return request.getfixturevalue(_URL_FIXTURE[backend])


@pytest.fixture
def db_url_unmigrated(backend: str, request: pytest.FixtureRequest) -> str:
    """An empty per-test URL of the backend under test."""
    return request.getfixturevalue(_UNMIGRATED_FIXTURE[backend])


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    """An opened Storage on a fresh migrated schema; closed afterwards."""
    opened = await open_storage(db_url, pool_size=5)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def unmigrated_storage(db_url_unmigrated: str) -> AsyncIterator[Storage]:
    """An opened Storage on an empty schema; closed afterwards."""
    opened = await open_storage(db_url_unmigrated, pool_size=5)
    try:
        yield opened
    finally:
        await opened.close()


# -- factories --------------------------------------------------------------------------
@pytest.fixture
def make_job() -> Callable[..., NewJob]:
    """make_job(**overrides) -> NewJob; `payload` (any JSON value) is encoded for you."""
    counter = itertools.count(1)

    def make(**overrides: Any) -> NewJob:
        n = next(counter)
        payload = overrides.pop("payload", {"n": n})
        fields: dict[str, Any] = {
            "queue_name": "default",
            "task_name": "noop",
            "payload_json": json.dumps(payload),
        }
        fields.update(overrides)
        return NewJob(**fields)

    return make


@pytest.fixture
def make_worker() -> Callable[..., dict[str, Any]]:
    """make_worker(**overrides) -> the dict register_worker() takes, with a unique id."""
    counter = itertools.count(1)

    def make(**overrides: Any) -> dict[str, Any]:
        n = next(counter)
        worker: dict[str, Any] = {
            "id": f"worker-{n}",
            "hostname": f"host-{n}",
            "pid": 1000 + n,
            "queues": ["default"],
            "concurrency": 2,
            "prefetch": 0,
            "version": "test",
            "admin_url": f"http://127.0.0.1:{9000 + n}",
        }
        worker.update(overrides)
        return worker

    return make


@pytest.fixture
def add_worker(
    storage: Storage, make_worker: Callable[..., dict[str, Any]]
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """await add_worker(**overrides) -> the registered worker's row."""

    async def add(**overrides: Any) -> dict[str, Any]:
        return await storage.register_worker(make_worker(**overrides))

    return add


def _all_to(worker_id: str) -> Callable[[list[PendingJob]], list[tuple[int, str]]]:
    return lambda jobs: [(j.id, worker_id) for j in jobs]


@pytest.fixture
def all_to() -> Callable[[str], Callable[[list[PendingJob]], list[tuple[int, str]]]]:
    """all_to(worker_id) -> a chooser that gives every offered job to that worker."""
    return _all_to


@pytest.fixture
def assign(storage: Storage) -> Callable[..., Awaitable[list[int]]]:
    """await assign(worker_id, queues=("default",), limit=100) -> ids dispatched to it."""

    async def run(worker_id: str, queues: Sequence[str] = ("default",), limit: int = 100):
        pairs = await storage.dispatch([worker_id], {q: limit for q in queues}, _all_to(worker_id))
        return [job_id for job_id, _ in pairs]

    return run


@pytest.fixture
def outcome(storage: Storage) -> Callable[..., Awaitable[Outcome]]:
    """await outcome(job_id, status, **fields) -> an Outcome carrying the job's current token."""

    async def make(job_id: int, status: str, **fields: Any) -> Outcome:
        job = await storage.get_job(job_id)
        assert job is not None, f"job {job_id} does not exist"
        return Outcome(id=job_id, token=job["token"], status=status, **fields)

    return make
