"""`qctl worker validate-config`: is this machine's configuration one a worker can start with?

The specification runs it when a worker does not start. Each check reads the settings the
way a service does (environment, or an env file) and tries what the worker will need: the
database with its schema, Redis when QUEUE_DRIVER=redis, the task module, the registry.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from qctl.database import redact, run_sync
from qshared.config import Settings, load_settings
from qshared.errors import ConfigError, QstackError
from qshared.storage import open_storage

TIMEOUT = 5.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _settings(env_file: Path | None) -> Settings:
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"env file {env_file} does not exist")
    return load_settings(_env_file=env_file) if env_file else load_settings()


def _timing(s: Settings) -> list[str]:
    """Settings that contradict each other."""
    problems = []
    if s.worker_registration_ttl < 2 * s.worker_health_check_interval:
        problems.append(
            f"WORKER_REGISTRATION_TTL ({s.worker_registration_ttl:g}s) is under twice "
            f"WORKER_HEALTH_CHECK_INTERVAL ({s.worker_health_check_interval:g}s): one late "
            "heartbeat would count as a dead worker")
    if s.failover_check_interval > s.worker_registration_ttl:
        problems.append(
            f"FAILOVER_CHECK_INTERVAL ({s.failover_check_interval:g}s) is longer than "
            f"WORKER_REGISTRATION_TTL ({s.worker_registration_ttl:g}s)")
    if s.db_pool_size < 3:
        problems.append(f"DB_POOL_SIZE ({s.db_pool_size}) is under 3: a worker needs one "
                        "connection to claim, one to report and one for its liveness lock")
    return problems


async def _database(s: Settings) -> str:
    storage = await asyncio.wait_for(open_storage(s.dsn, pool_size=1), TIMEOUT)
    try:
        status = await storage.migration_status()
    finally:
        await storage.close()
    pending = [m["name"] for m in status if not m.get("applied_at")]
    if pending:
        raise ConfigError(f"{len(pending)} migration(s) pending ({', '.join(pending)}): "
                          "run `qctl db migrate`")
    return f"{redact(s.dsn)}: reachable, schema up to date ({len(status)} migrations)"


async def _redis(s: Settings) -> str:
    if s.queue_driver != "redis":
        return "not used (QUEUE_DRIVER=database)"
    if not s.redis_url:
        raise ConfigError("QUEUE_DRIVER=redis needs REDIS_URL")
    from redis.asyncio import Redis  # optional: only where Redis is the queue driver

    client = Redis.from_url(s.redis_url, socket_connect_timeout=TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return f"{redact(s.redis_url)}: reachable"


def _task_module(s: Settings) -> str:
    if not s.worker_app:
        return "none set (WORKER_APP): only the built-in tasks"
    importlib.import_module(s.worker_app)
    return f"{s.worker_app} imports"


def _registry(s: Settings) -> str:
    headers = {"Authorization": f"Bearer {s.qstack_token}"} if s.qstack_token else {}
    url = s.qstack_registry_url.rstrip("/")
    try:
        resp = httpx.get(f"{url}/api/v1/workers", headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{url} (QSTACK_REGISTRY_URL): {exc or type(exc).__name__}") from None
    if resp.status_code == 401:
        raise ConfigError(f"{url}: the registry refused the token (QSTACK_TOKEN)")
    if resp.status_code != 200:
        raise ConfigError(f"{url}: the registry answered {resp.status_code}")
    return f"{s.qstack_registry_url}: reachable, token accepted"


def _attempt(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except QstackError as exc:
        return Check(name, False, exc.message)
    except Exception as exc:  # a driver's own error (or an import's): report it, do not crash
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def _sync(fn: Callable[[Settings], Awaitable[str]], s: Settings) -> Callable[[], str]:
    return lambda: run_sync(lambda: fn(s))


def validate(env_file: Path | None = None) -> tuple[list[Check], dict[str, Any]]:
    """Every check, and the settings as read (secrets redacted)."""
    try:
        s = _settings(env_file)
    except ConfigError as exc:
        return [Check("settings", False, exc.message)], {}
    checks = [Check("settings", True, "every variable parses" + (f" ({env_file})" if env_file
                                                                  else ""))]
    timing = _timing(s)
    checks.append(Check("timing", not timing, "; ".join(timing) or "intervals consistent"))
    checks.append(_attempt("database", _sync(_database, s)))
    checks.append(_attempt("redis", _sync(_redis, s)))
    checks.append(_attempt("tasks", lambda: _task_module(s)))
    checks.append(_attempt("registry", lambda: _registry(s)))
    shown = s.model_dump(mode="json")
    for secret in ("db_pass", "qstack_token"):
        if shown.get(secret):
            shown[secret] = "***"
    if shown.get("database_url"):
        shown["database_url"] = redact(shown["database_url"])
    return checks, shown
