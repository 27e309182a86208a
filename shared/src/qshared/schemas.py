"""API schemas (pydantic) shared by the services, the clients and the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JobStatus = Literal["pending", "assigned", "running", "succeeded", "dead", "cancelled"]
WorkerStatus = Literal["active", "draining", "stopped", "failed"]
HealthStatus = Literal["healthy", "degraded", "unhealthy"]

NAME_PATTERN = r"^[A-Za-z0-9_.:\-]{1,200}$"  # task and queue names
_NAME = NAME_PATTERN


class Strict(BaseModel):
    """A request body: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


class JobIn(Strict):
    """One job to enqueue."""

    task: str = Field(pattern=_NAME, description="Registered task name, e.g. 'noop'.")
    queue: str | None = Field(None, pattern=_NAME, description="Queue; QUEUE_DEFAULT if unset.")
    payload: Any = Field(None, description="Any JSON value handed to the task.")
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    delay_s: float | None = Field(None, ge=0, le=366 * 86400, description="Seconds to wait.")
    run_at: datetime | None = Field(None, description="Earliest start (ISO 8601 with zone).")
    max_attempts: int | None = Field(None, ge=1, le=1000, description="Attempts before dead.")
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400, description="Per-attempt limit.")
    unique_key: str | None = Field(
        None, min_length=1, max_length=255, description="A second job with this key is not added."
    )
    lock_key: str | None = Field(None, min_length=1, max_length=255, description="Mutex key.")

    @model_validator(mode="after")
    def _one_start(self) -> JobIn:
        if self.delay_s is not None and self.run_at is not None:
            raise ValueError("give delay_s or run_at, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        return self

    def start_delay(self, now: datetime | None = None) -> float:
        """Seconds from now until the job may start (never negative)."""
        if self.run_at is not None:
            now = now or datetime.now(UTC)
            return max((self.run_at - now).total_seconds(), 0.0)
        return self.delay_s or 0.0


class JobBatchIn(Strict):
    """Several jobs, inserted in one transaction."""

    jobs: list[JobIn] = Field(min_length=1)


class EnqueuedOut(BaseModel):
    """The id of a submitted job; created is False when its unique_key was known."""

    id: int
    created: bool


class BatchOut(BaseModel):
    """The ids of a batch, in submission order."""

    jobs: list[EnqueuedOut]


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: int
    queue: str
    task: str
    payload: Any
    priority: int
    status: JobStatus
    attempts: int
    max_attempts: int
    run_at: datetime
    timeout_s: float
    unique_key: str | None
    lock_key: str | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    result: Any

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobOut:
        return cls(
            id=row["id"], queue=row["queue_name"], task=row["task_name"],
            payload=row["payload"], priority=row["priority"], status=row["status"],
            attempts=row["attempts"], max_attempts=row["max_attempts"], run_at=row["run_at"],
            timeout_s=row["timeout"], unique_key=row["unique_key"], lock_key=row["lock_key"],
            worker_id=row["worker_id"], created_at=row["created_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            last_error=row["last_error"], result=row["result"],
        )


class AssignmentOut(BaseModel):
    """One assignment of a job to a worker."""

    worker_id: str
    token: int
    assigned_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None


class JobDetailOut(JobOut):
    """A job with its assignment history."""

    assignments: list[AssignmentOut] = []


class JobListOut(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut]


class QueueStatsOut(BaseModel):
    """Counts by state for one queue."""

    queue: str
    pending: int
    scheduled: int
    assigned: int
    running: int
    succeeded: int
    failed: int
    dead: int
    cancelled: int
    oldest_pending_age_s: float


class StatsOut(BaseModel):
    """Every queue's counts."""

    queues: list[QueueStatsOut]


class QueueOut(QueueStatsOut):
    """A queue's counts by state (as in /admin/queue/stats) and whether it is paused."""

    paused: bool


class QueueListOut(BaseModel):
    """Every queue that has jobs or has been paused, by name."""

    queues: list[QueueOut]


class QueuePausedOut(BaseModel):
    """A queue's pause state after a pause or a resume."""

    queue: str
    paused: bool


class JobsBulkIn(Strict):
    """Which jobs a bulk retry or cancel acts on: every given filter must match."""

    ids: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, max_length=10_000, description="Only these job ids."
    )
    queue: str | None = Field(None, pattern=_NAME, description="Only this queue.")
    status: JobStatus | None = Field(None, description="Only jobs in this state.")
    task: str | None = Field(None, pattern=_NAME, description="Only this task.")
    limit: int = Field(1000, ge=1, le=10_000, description="The most jobs changed.")

    @model_validator(mode="after")
    def _some_filter(self) -> JobsBulkIn:
        if self.ids is None and self.queue is None and self.status is None and self.task is None:
            raise ValueError("give at least one of ids, queue, status and task")
        return self


class JobsBulkOut(BaseModel):
    """The jobs a bulk retry or cancel changed, ascending."""

    count: int
    ids: list[int]


class ThroughputBucketOut(BaseModel):
    """Attempt outcomes in one second (t: its start, epoch seconds)."""

    t: float
    succeeded: int
    failed: int = Field(description="Attempts that failed and will be retried.")
    dead: int = Field(description="Attempts after which the job was dead (attempts used up).")


class LatencyOut(BaseModel):
    """Enqueue-to-start latency percentiles in ms (None without samples)."""

    p50: float | None
    p99: float | None
    samples: int


class ThroughputOut(BaseModel):
    """Outcomes per second over a window, oldest first, and enqueue-to-start latency."""

    seconds: int
    buckets: list[ThroughputBucketOut]
    enqueue_to_start_ms: LatencyOut


class WorkerIn(Strict):
    """A worker registering itself."""

    id: str = Field(pattern=_NAME)
    hostname: str = Field(min_length=1, max_length=255)
    pid: int = Field(ge=0)
    queues: list[str] = Field(min_length=1)
    concurrency: int = Field(ge=1, le=1024)
    prefetch: int = Field(0, ge=0, le=100000)
    version: str = Field("", max_length=64)
    admin_url: str | None = Field(None, max_length=512)
    config: dict[str, Any] = Field(
        default_factory=dict, max_length=100,
        description="The worker's pool-wide settings (compared by `worker validate-pool`).",
    )


class HealthIn(Strict):
    """A worker's own measurements, sent with each heartbeat."""

    cpu_percent: float = Field(0.0, ge=0)
    memory_bytes: int = Field(0, ge=0)
    in_flight: int = Field(0, ge=0)
    loop_lag_ms: float = Field(0.0, ge=0)
    jobs_failed_recent: int = Field(0, ge=0)
    jobs_done_recent: int = Field(0, ge=0)
    sent_at: float | None = Field(
        None, gt=0, description="The worker's wall clock (Unix seconds) when it sent this.",
    )


class HeartbeatIn(Strict):
    """A heartbeat with the worker's health figures."""

    health: HealthIn = HealthIn()


class HeartbeatOut(BaseModel):
    """The registry's answer: the worker's status and what it is asked to do."""

    status: WorkerStatus
    health: HealthStatus
    commands: list[Literal["drain", "stop"]]


class RegisteredOut(BaseModel):
    """The registry's answer to a registration."""

    id: str
    status: WorkerStatus
    heartbeat_interval_s: float
    registration_ttl_s: float


class WorkerOut(BaseModel):
    """A worker as the registry shows it."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    prefetch: int
    status: WorkerStatus
    requested: str | None
    version: str
    admin_url: str | None
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float | None = None
    in_flight: int | None = None
    health: HealthStatus | None = None
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    loop_lag_ms: float | None = None
    clock_skew_ms: float | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WorkerOut:
        data = dict(row)
        data["queues"] = [q for q in row["queues"].split(",") if q]
        return cls.model_validate(data, from_attributes=False)


class WorkerAssignmentOut(BaseModel):
    """One of a worker's assignments."""

    job_id: int
    queue: str
    token: int
    assigned_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WorkerAssignmentOut:
        return cls(
            job_id=row["job_id"], queue=row["queue_name"], token=row["token"],
            assigned_at=row["assigned_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], outcome=row["outcome"],
        )


class WorkerDetailOut(WorkerOut):
    """A worker with its recent health checks and its 20 latest assignments, newest first."""

    health_checks: list[dict[str, Any]] = []
    assignments: list[WorkerAssignmentOut] = []


class WorkerListOut(BaseModel):
    """Registered workers."""

    workers: list[WorkerOut]


class WorkerStatsOut(BaseModel):
    """Per worker: assignments by outcome and mean run time."""

    worker_id: str
    assigned: int
    succeeded: int
    failed: int
    dead: int
    in_flight: int
    avg_run_s: float


class WorkerStatsListOut(BaseModel):
    """Every worker's statistics."""

    workers: list[WorkerStatsOut]


class PoolProblemOut(BaseModel):
    """One finding of `worker validate-pool`."""

    check: str
    subject: str
    message: str


class PoolReportOut(BaseModel):
    """The pool doctor's verdict: each check with its number of findings, and the findings."""

    ok: bool
    workers: int
    queues: int
    checks: dict[str, int]
    problems: list[PoolProblemOut]


class ResourceStatOut(BaseModel):
    """One worker's health figures over the window."""

    worker_id: str
    hostname: str
    status: WorkerStatus
    concurrency: int
    checks: int
    not_healthy: int
    cpu_avg: float | None
    cpu_max: float | None
    cpu_last: float | None
    memory_avg: float | None
    memory_max: int | None
    memory_last: int | None
    in_flight_avg: float | None
    in_flight_max: int | None
    utilization: float | None = Field(None, description="Average in-flight / concurrency.")
    loop_lag_avg_ms: float | None
    loop_lag_max_ms: float | None
    last_checked_at: datetime


class ResourceStatsOut(BaseModel):
    """`worker resource-stats`: per worker, and the pool's totals."""

    seconds: float
    workers: list[ResourceStatOut]
    totals: dict[str, float]


class PoolWorkerConfigOut(BaseModel):
    """One worker's configuration as exported."""

    id: str
    hostname: str
    status: WorkerStatus
    queues: list[str]
    concurrency: int
    prefetch: int
    version: str
    admin_url: str | None
    config: dict[str, Any]


class PoolConfigOut(BaseModel):
    """`worker export-config`: the pool's configuration."""

    exported_at: datetime
    workers: list[PoolWorkerConfigOut]
    queues: dict[str, list[str]] = Field(description="Each queue with the workers serving it.")
    skew: dict[str, dict[str, list[str]]] = Field(
        description="Settings whose values differ between workers: value -> worker ids.")


class ErrorBody(BaseModel):
    """The error's code and a message naming what was wrong."""

    code: str
    message: str


class ErrorOut(BaseModel):
    """Every error response."""

    error: ErrorBody


class HealthOut(BaseModel):
    """A /health answer: overall status and what was checked."""

    status: Literal["ok", "degraded", "failing"]
    service: str
    checks: dict[str, Any]


# -- locks ------------------------------------------------------------------------------
_MAX_TTL_MS = 86_400_000


class LockAcquireIn(Strict):
    """Take a lock, waiting up to wait_ms while another owner holds it."""

    owner: str = Field(min_length=1, max_length=255, description="Who holds the lock.")
    ttl_ms: int = Field(ge=1, le=_MAX_TTL_MS, description="Lease length in milliseconds.")
    wait_ms: int = Field(0, ge=0, le=300_000, description="How long to wait for the holder.")


class LockRenewIn(Strict):
    """Extend a held lease by ttl_ms from now."""

    owner: str = Field(min_length=1, max_length=255, description="Who holds the lock.")
    token: int = Field(ge=1, description="The fencing token the acquisition returned.")
    ttl_ms: int = Field(ge=1, le=_MAX_TTL_MS, description="Lease length in milliseconds.")


class LockReleaseIn(Strict):
    """Give a held lock back."""

    owner: str = Field(min_length=1, max_length=255, description="Who holds the lock.")
    token: int = Field(ge=1, description="The fencing token the acquisition returned.")


class LockOut(BaseModel):
    """A held lease: its fencing token and when it ends."""

    key: str
    owner: str
    token: int
    expires_at: datetime


class LockReleasedOut(BaseModel):
    """The answer to a release."""

    released: bool


class LockInfoOut(BaseModel):
    """A lock row as the admin API shows it."""

    key: str
    owner: str
    worker_id: str | None
    token: int
    acquired_at: datetime
    expires_at: datetime
    live: bool
    expires_in_s: float

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LockInfoOut:
        return cls(
            key=row["lock_key"], owner=row["owner"], worker_id=row["worker_id"],
            token=row["token"], acquired_at=row["acquired_at"], expires_at=row["expires_at"],
            live=row["live"], expires_in_s=row["expires_in_s"],
        )


class LockListOut(BaseModel):
    """Every lock row, live or expired."""

    locks: list[LockInfoOut]


class LocksClearedOut(BaseModel):
    """The expired lock rows that were deleted."""

    cleared: int
    keys: list[str]


class FailoverEventOut(BaseModel):
    """One failover_events row."""

    id: int
    event_type: str
    failed_worker_id: str | None
    target_worker_id: str | None
    jobs_recovered: int
    jobs_dead: int
    failover_at: datetime
    detection_ms: float | None
    recovery_ms: float | None
    details: dict[str, Any] | None


class FailoverEventListOut(BaseModel):
    """Failover events, newest first."""

    events: list[FailoverEventOut]


class RecoverIn(Strict):
    """A manual failover pass; `force` skips the guards against mass declarations."""

    force: bool = False


class RecoverOut(BaseModel):
    """What one failover pass did."""

    declared_dead: list[str]
    jobs_recovered: int
    jobs_dead: int
    quarantined: list[int]
    timed_out: int
    orphans: list[str]
    stale_locks: list[str]
    held_back: list[str]
    note: str | None


# -- retention --------------------------------------------------------------------------
_FINISHED = ("succeeded", "dead", "cancelled")
_DAYS = Field(strict=True, ge=0, le=36500,
              description="Delete rows older than this many days (fractions allowed; 0: all "
                          "rows up to now).")


class CleanupDaysIn(Strict):
    """A clean-up of the rows older than `days`."""

    days: float = _DAYS


class CleanupJobsIn(Strict):
    """A clean-up of finished jobs (with their assignments) that finished more than `days`
    ago."""

    days: float = _DAYS
    statuses: list[str] = Field(
        default_factory=lambda: ["succeeded", "cancelled"], min_length=1, max_length=3,
        json_schema_extra={"items": {"type": "string", "enum": list(_FINISHED)}},
        description="Finished states whose jobs go (default succeeded and cancelled).",
    )

    @field_validator("statuses")
    @classmethod
    def _finished_states(cls, statuses: list[str]) -> list[str]:
        for status in statuses:
            if status not in _FINISHED:
                raise ValueError(f"{status!r} is not a finished state (one of "
                                 f"{', '.join(_FINISHED)})")
        return [s for s in _FINISHED if s in statuses]


class CleanupOrphansIn(Strict):
    """A clean-up of orphaned job assignments (no options)."""


class CleanupOut(BaseModel):
    """What one clean-up deleted."""

    table: str
    deleted: int
    older_than_days: float


class CleanupJobsOut(CleanupOut):
    """What a clean-up of finished jobs deleted (their assignment rows went with them)."""

    statuses: list[str]


class CleanupOrphansOut(BaseModel):
    """Assignment rows deleted (their job is gone) and closed (their job moved on)."""

    table: str
    deleted: int
    closed: int


class RetentionPolicyOut(BaseModel):
    """The retention settings: days each table keeps its rows (0: forever), and the interval
    of the failover leader's runs (0: no schedule)."""

    interval_s: float
    health_checks_days: float
    failover_events_days: float
    jobs_days: float = Field(description="Succeeded and cancelled jobs.")
    dead_jobs_days: float


class RetentionRunOut(BaseModel):
    """One retention run: rows deleted per table, open assignments closed, the steps a 0
    setting skipped, and the error that ended it early (None when it completed)."""

    trigger: Literal["schedule", "manual"]
    started_at: datetime
    finished_at: datetime
    duration_s: float
    deleted: dict[str, int]
    closed_assignments: int
    skipped: list[str]
    error: str | None


class RetentionRunIn(Strict):
    """A retention run now, with the configured policy (no options)."""


class RetentionOut(BaseModel):
    """The retention policy, whether this replica runs the schedule, and its last run."""

    policy: RetentionPolicyOut
    scheduled: bool = Field(description="Whether this replica runs the schedule (it leads "
                                        "failover and the interval is not 0).")
    next_run_in_s: float | None
    last_run: RetentionRunOut | None
