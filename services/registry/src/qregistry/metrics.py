"""The registry's Prometheus objects (the specification's names, exactly)."""

from prometheus_client import Counter

HEALTH_CHECKS = Counter(
    "worker_health_checks", "Worker health checks recorded, by status.", ["status"]
)
HEALTH_CHECKS_FAILED = Counter(
    "worker_health_checks_failed", "Worker health checks graded unhealthy."
)
