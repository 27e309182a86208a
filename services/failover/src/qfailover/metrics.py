"""The failover watcher's Prometheus objects (new names start qstack_)."""

from prometheus_client import Counter, Histogram

FAILOVERS = Counter("qstack_failovers", "Workers declared dead, by event type.", ["event_type"])
# Every event type's series exists from the start at 0, so that increase() sees the first one.
EVENT_TYPES = ("worker_crashed", "worker_unresponsive", "orphans_recovered")
for _event_type in EVENT_TYPES:
    FAILOVERS.labels(event_type=_event_type)
RESCUED = Counter("qstack_jobs_rescued", "Jobs returned to pending from dead workers.")
QUARANTINED = Counter("qstack_jobs_quarantined", "Jobs made dead for taking workers down.")
TIMED_OUT = Counter("qstack_jobs_timed_out", "Running jobs recovered past timeout + grace.")
HELD_BACK = Counter(
    "qstack_failover_held_back", "Passes in which a guard kept workers from being declared dead."
)
RESCUE_SECONDS = Histogram(
    "qstack_rescue_seconds", "From a dead worker's last heartbeat to its jobs being pending.",
    buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60, 120),
)
RETENTION_DELETED = Counter(
    "qstack_retention_deleted", "Rows deleted by retention runs and clean-up commands, by table.",
    ["table"],
)
RETENTION_TABLES = ("worker_health_checks", "failover_events", "job_assignments", "jobs")
for _table in RETENTION_TABLES:
    RETENTION_DELETED.labels(table=_table)
RETENTION_RUNS = Counter("qstack_retention_runs", "Retention runs, by result (ok, failed).",
                         ["result"])
for _result in ("ok", "failed"):
    RETENTION_RUNS.labels(result=_result)
