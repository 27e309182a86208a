"""Direct database access for qctl: which database to use, migrations and their status."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from qshared.config import load_settings
from qshared.errors import ConfigError, StorageError
from qshared.storage import Storage, open_storage

T = TypeVar("T")

CONNECT_TIMEOUT = 15.0


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine function to completion from sync code, even inside a running loop.

    Inside a running event loop (an async test, say) `asyncio.run` is not allowed, so the
    coroutine then runs on its own loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(fn())
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(fn())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=runner, name="qctl-run-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ***."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def resolve_dsn(
    db: str | None = None, *, env: Mapping[str, str] | None = None,
    embedded_dir: Path | None = None,
) -> tuple[str, str]:
    """The database to use and where that came from.

    Order: `--db`, DATABASE_URL, the DB_* variables when DB_HOST is set, the embedded
    PostgreSQL of this directory when it is running (`qctl up` started it), then the
    DB_* defaults.
    """
    env = os.environ if env is None else env
    if db:
        return db, "--db"
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"], "DATABASE_URL"
    if not env.get("DB_HOST"):
        from qctl.embedded import running_dsn

        dsn = running_dsn(embedded_dir)
        if dsn:
            return dsn, "embedded PostgreSQL"
    return load_settings().dsn, "DB_* settings"


def resolve_owner_dsn(db: str | None = None, *,
                      env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The database for schema changes (migrate, restore) and where that came from: `--db`,
    then DB_OWNER_URL (the owner account, where the services run as a restricted user),
    then as `resolve_dsn`."""
    env = os.environ if env is None else env
    if not db and env.get("DB_OWNER_URL"):
        return env["DB_OWNER_URL"], "DB_OWNER_URL"
    return resolve_dsn(db, env=env)


async def _open(dsn: str) -> Storage:
    try:
        return await asyncio.wait_for(open_storage(dsn, pool_size=2), CONNECT_TIMEOUT)
    except TimeoutError:
        raise StorageError(
            f"cannot connect to {redact(dsn)} within {CONNECT_TIMEOUT:.0f}s"
        ) from None
    except ValueError as exc:  # the driver's complaint about a malformed URL
        raise ConfigError(f"bad database URL {redact(dsn)}: {exc}") from None


async def migrate_async(dsn: str) -> list[str]:
    """Apply pending migrations. Returns: the names applied now."""
    storage = await _open(dsn)
    try:
        return await storage.migrate()
    finally:
        await storage.close()


async def status_async(dsn: str) -> list[dict[str, Any]]:
    """Every migration with `applied_at` (None when pending)."""
    storage = await _open(dsn)
    try:
        return await storage.migration_status()
    finally:
        await storage.close()


def migrate(dsn: str) -> list[str]:
    """Sync form of `migrate_async`."""
    return run_sync(lambda: migrate_async(dsn))


def migration_status(dsn: str) -> list[dict[str, Any]]:
    """Sync form of `status_async`."""
    return run_sync(lambda: status_async(dsn))


def with_storage(dsn: str, action: Callable[[Storage], Awaitable[T]]) -> T:
    """Open the database, run `action` on it and close it again (sync)."""

    async def run() -> T:
        storage = await _open(dsn)
        try:
            return await action(storage)
        finally:
            await storage.close()

    return run_sync(run)
