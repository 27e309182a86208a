"""Prometheus objects every service exports (the specification's names, declared once)."""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Gauge

DB_POOL_ACTIVE = Gauge("db_connection_pool_active", "Database connections in use.")
DB_POOL_MAX = Gauge("db_connection_pool_max", "Database connection pool size.")
LEADER = Gauge("qstack_leader", "1 while this replica holds the role's leader lease.", ["role"])


class _Pooled(Protocol):
    def pool_stats(self) -> tuple[int, int]: ...


def track_pool(storage: _Pooled) -> None:
    """Read the pool gauges from `storage` at every scrape (the process's one pool)."""
    DB_POOL_ACTIVE.set_function(lambda: storage.pool_stats()[0])
    DB_POOL_MAX.set_function(lambda: storage.pool_stats()[1])
