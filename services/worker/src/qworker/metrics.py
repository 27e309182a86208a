"""The worker's Prometheus objects (the specification's names exactly; new ones qstack_)."""

from prometheus_client import Counter, Gauge, Histogram

JOBS_PROCESSED = Counter(
    "jobs_processed", "Jobs finished by this worker, by queue and outcome.",
    ["queue_name", "status"],
)
JOB_DURATION = Histogram(
    "qstack_job_duration_seconds", "Run time of one job attempt.", ["queue_name"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300),
)
ENQUEUE_TO_START = Histogram(
    "qstack_enqueue_to_start_seconds", "From the job's due time to its start.", ["queue_name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = Counter("qstack_job_retries", "Failed attempts that will be retried.", ["queue_name"])
DEAD = Counter("qstack_jobs_dead", "Jobs that ran out of attempts.", ["queue_name"])
IN_FLIGHT = Gauge("qstack_worker_in_flight", "Jobs this worker holds (running or waiting).")
CPU = Gauge("worker_cpu_usage_percent", "CPU use of this worker process, percent of one core.")
MEMORY = Gauge("qstack_worker_memory_bytes", "Resident memory of this worker process.")
LOOP_LAG = Gauge("qstack_worker_loop_lag_seconds", "Event-loop lag measured by the worker.")


def declare_queues(queues: list[str]) -> None:
    """Create the per-queue series at 0 for the queues this worker serves, so that rate() and
    increase() count the first job (a labelled series appears only when first used)."""
    for queue in queues:
        for status in ("succeeded", "failed", "dead"):
            JOBS_PROCESSED.labels(queue_name=queue, status=status)
        JOB_DURATION.labels(queue_name=queue)
        ENQUEUE_TO_START.labels(queue_name=queue)
        RETRIES.labels(queue_name=queue)
        DEAD.labels(queue_name=queue)
