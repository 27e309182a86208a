"""Storage: one contract, one module per backend, chosen by URL scheme (drivers load lazily)."""

from __future__ import annotations

import hashlib

from qshared.errors import ConfigError
from qshared.storage.base import Storage

DISPATCH_CHANNEL = "qstack_jobs"


def worker_channel(worker_id: str) -> str:
    """The wake-up channel of one worker (matches the SQL: 'qstack_w_' || md5(id))."""
    return "qstack_w_" + hashlib.md5(worker_id.encode()).hexdigest()


_SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "postgresql+asyncpg": "postgres",
            "mysql": "mysql", "mysql+aiomysql": "mysql", "mariadb": "mysql"}


def dialect_of(url: str) -> str:
    """The backend a database URL names, by its scheme: "postgres" or "mysql".

    Raises:
        ConfigError: the scheme is neither.
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise ConfigError(f"DATABASE_URL: unsupported database scheme {scheme!r} "
                          "(use postgresql:// or mysql://)")
    return _SCHEMES[scheme]


async def open_storage(
    url: str, *, pool_size: int = 20, max_idle: float = 3600, durable: bool = True
) -> Storage:
    """Open the backend the URL names: postgresql:// (asyncpg) or mysql:// (aiomysql, for
    MySQL 8 and MariaDB 10.6+); each driver is imported only when its scheme is used.

    `durable=False` lets commits return before they are on disk: for a worker's starts and
    outcomes, which a database crash may take back without losing a job (it runs again).
    PostgreSQL only: MySQL's counterpart is a server-wide setting.
    """
    if dialect_of(url) == "postgres":
        from qshared.storage.postgres import PostgresStorage

        return await PostgresStorage.open(
            url, pool_size=pool_size, max_idle=max_idle, durable=durable
        )
    from qshared.storage.mysql import MysqlStorage

    return await MysqlStorage.open(url, pool_size=pool_size, max_idle=max_idle, durable=durable)


__all__ = ["DISPATCH_CHANNEL", "Storage", "dialect_of", "open_storage", "worker_channel"]
