"""Prometheus objects every service exports (the specification's names, declared once)."""

from __future__ import annotations

from prometheus_client import Gauge

DB_POOL_ACTIVE = Gauge("db_connection_pool_active", "Database connections in use.")
DB_POOL_MAX = Gauge("db_connection_pool_max", "Database connection pool size.")
LEADER = Gauge("qstack_leader", "1 while this replica holds the role's leader lease.", ["role"])


def observe_pool(stats: tuple[int, int]) -> None:
    """Set the pool gauges from Storage.pool_stats()."""
    DB_POOL_ACTIVE.set(stats[0])
    DB_POOL_MAX.set(stats[1])
