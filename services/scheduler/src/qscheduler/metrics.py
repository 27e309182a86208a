"""The scheduler's Prometheus objects (the specification's names exactly; new ones qstack_)."""

from prometheus_client import Counter, Histogram

from qshared.metrics import LEADER  # noqa: F401  (declared once for every role)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

JOBS_ENQUEUED = Counter("qstack_jobs_enqueued", "Jobs accepted, by queue.", ["queue_name"])
JOBS_ASSIGNED = Counter("qstack_jobs_assigned", "Jobs assigned to workers.", ["queue_name"])
DISPATCH_SECONDS = Histogram(
    "qstack_dispatch_batch_seconds", "Time of one dispatch pass that assigned jobs.",
    buckets=_FAST,
)
SELECTION_SECONDS = Histogram(
    "qstack_worker_selection_seconds", "Time to choose workers for one batch.", buckets=_FAST
)
DISPATCH_BATCH = Histogram(
    "qstack_dispatch_batch_size", "Jobs assigned per dispatch pass.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000),
)
LOCK_ACQUIRE_SECONDS = Histogram(
    "qstack_lock_acquire_seconds", "Time of one lock acquire request, waiting included.",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
             60, 300),
)
LOCK_CONTENTION = Counter(
    "qstack_lock_contention_total", "Acquire requests that found the lock held by another owner."
)
