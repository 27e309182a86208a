"""The storage contract every backend implements, and the plain records it speaks in."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qshared.errors import ValidationFailed

JOB_STATES = ("pending", "assigned", "running", "succeeded", "dead", "cancelled")
ACTIVE_STATES = ("assigned", "running")
RETRYABLE_STATES = ("dead", "cancelled")
CANCELLABLE_STATES = ("pending", "assigned")
WORKER_STATES = ("active", "draining", "stopped", "failed")
FINISHED_STATES = ("succeeded", "dead", "cancelled")
RETENTION_BATCH = 5000  # rows one clean-up statement touches: a backlog never holds long locks
MAX_RETENTION_DAYS = 36500.0
# Every table the migrations create, in migration order: what a backup holds and what the
# performance stats cover (a test checks it against the migrated schema).
TABLES = (
    "schema_migrations", "jobs", "queue_workers", "distributed_locks", "job_assignments",
    "worker_health_checks", "failover_events", "system_snapshots", "queue_settings",
)


def retention_seconds(days: float) -> float:
    """A retention in days (fractions allowed) as seconds.

    Raises:
        ValidationFailed: not a number between 0 and MAX_RETENTION_DAYS.
    """
    if isinstance(days, bool) or not isinstance(days, int | float) or not (
        0 <= days <= MAX_RETENTION_DAYS
    ):
        raise ValidationFailed(f"days must be a number from 0 to {MAX_RETENTION_DAYS:g}, "
                               f"got {days!r}")
    return float(days) * 86400


def finished_statuses(statuses: Sequence[str]) -> list[str]:
    """The distinct statuses, each a finished state, in FINISHED_STATES order.

    Raises:
        ValidationFailed: one is not a finished state (named in the message).
    """
    for status in statuses:
        if status not in FINISHED_STATES:
            raise ValidationFailed(f"status {status!r} is not a finished state (one of "
                                   f"{', '.join(FINISHED_STATES)})")
    return [s for s in FINISHED_STATES if s in statuses]


@dataclass(slots=True)
class NewJob:
    """A job to insert, already validated."""

    queue_name: str
    task_name: str
    payload_json: str
    priority: int = 0
    max_attempts: int = 3
    timeout: float = 300.0
    delay_s: float = 0.0
    unique_key: str | None = None
    lock_key: str | None = None


@dataclass(slots=True)
class Enqueued:
    """The id a submitted job got, and whether it was new (False: its unique_key was seen)."""

    id: int
    created: bool


@dataclass(slots=True)
class WorkerSlots:
    """A worker that may receive jobs, with its room.

    capacity is its concurrency plus its prefetch; concurrency (None: all of capacity) is how
    many of its jobs run at once, the rest waiting in its local queue.
    """

    id: str
    queues: tuple[str, ...]
    capacity: int
    in_flight: int
    admin_url: str | None = None  # where the worker takes pushed wake-ups
    concurrency: int | None = None

    @property
    def free(self) -> int:
        return max(self.capacity - self.in_flight, 0)

    @property
    def prefetch(self) -> int:
        """Slots whose jobs would wait in the worker's queue rather than start at once."""
        return 0 if self.concurrency is None else max(self.capacity - self.concurrency, 0)


@dataclass(slots=True)
class PendingJob:
    """A pending job the dispatcher may assign."""

    id: int
    queue_name: str
    priority: int
    run_at: datetime
    lock_key: str | None = None


@dataclass(slots=True)
class Assignment:
    """A job as a worker receives it."""

    id: int
    token: int
    queue_name: str
    task_name: str
    payload: Any
    priority: int
    attempts: int
    max_attempts: int
    timeout: float
    created_at: datetime
    run_at: datetime


@dataclass(slots=True)
class JobFilter:
    """Which jobs a bulk retry or cancel acts on: every given field must match (None: any)."""

    ids: Sequence[int] | None = None
    queue: str | None = None
    status: str | None = None
    task: str | None = None


@dataclass(slots=True)
class Outcome:
    """What a worker reports about one job: started, succeeded, retry (pending) or dead."""

    id: int
    token: int
    status: str
    started: float | None = None
    finished: float | None = None
    result_json: str | None = None
    error: str | None = None
    retry_in: float = 0.0


Chooser = Callable[[list[PendingJob]], list[tuple[int, str]]]
Callback = Callable[[], Any]


class Subscription(abc.ABC):
    """A live wake-up subscription; close() ends it."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class Storage(abc.ABC):
    """Everything qstack keeps, behind one interface per backend."""

    dialect: str
    # True where the database cannot push a worker's wake-up itself (no LISTEN/NOTIFY): the
    # dispatcher then POSTs to the worker's /admin/wake after each pass that assigned to it.
    push_wakeups: bool = False

    # -- lifecycle ---------------------------------------------------------------------
    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises:
        StorageError: the database cannot be reached.
        """

    @abc.abstractmethod
    def pool_stats(self) -> tuple[int, int]:
        """Returns:
        (connections in use, the pool's maximum).
        """

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending migrations under a lock.

        Returns:
            The names of the migrations applied now.
        """

    @abc.abstractmethod
    async def migration_status(self) -> list[dict[str, Any]]:
        """Returns:
        One row per known migration: version, name, applied_at (None when pending).
        """

    # -- jobs --------------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        """Insert jobs in one transaction and wake the dispatcher.

        Args:
            jobs: validated jobs, in submission order.
        Returns:
            One Enqueued per input job, same order; a known unique_key yields the first id.
        """

    @abc.abstractmethod
    async def get_job(self, job_id: int) -> dict[str, Any] | None:
        """Returns: the job's row, or None."""

    @abc.abstractmethod
    async def job_assignments(self, job_id: int) -> list[dict[str, Any]]:
        """Returns: the job's assignment history, oldest first."""

    @abc.abstractmethod
    async def cancel_job(self, job_id: int) -> bool:
        """Cancel a pending or assigned job.

        Returns:
            True when it was cancelled now; False when it exists in another state or not.
        """

    @abc.abstractmethod
    async def retry_job(self, job_id: int) -> dict[str, Any] | None:
        """Make a dead or cancelled job pending and due now, and wake the dispatcher. When
        its attempts are used up, max_attempts becomes attempts + 1 (one more attempt).

        Returns:
            The job's row as it is now; None when it exists in another state or not.
        """

    @abc.abstractmethod
    async def retry_jobs(self, match: JobFilter, limit: int) -> list[int]:
        """retry_job for up to `limit` dead or cancelled jobs matching `match`, oldest first,
        in one statement.

        Args:
            match: the filters; each given one must match.
            limit: the most jobs changed.
        Returns:
            The ids of the jobs retried, ascending.
        """

    @abc.abstractmethod
    async def cancel_jobs(self, match: JobFilter, limit: int) -> list[int]:
        """cancel_job for up to `limit` pending or assigned jobs matching `match`, oldest
        first, in one statement. A job a dispatch pass is assigning at that instant is
        skipped, not waited for.

        Args:
            match: the filters; each given one must match.
            limit: the most jobs changed.
        Returns:
            The ids of the jobs cancelled, ascending.
        """

    @abc.abstractmethod
    async def list_jobs(
        self, *, queue: str | None, status: str | None, task: str | None,
        before_id: int | None, limit: int,
    ) -> list[dict[str, Any]]:
        """Returns: jobs matching the filters, newest first."""

    @abc.abstractmethod
    async def queue_stats(self) -> list[dict[str, Any]]:
        """Returns: per queue the counts by state and the oldest pending age in seconds."""

    @abc.abstractmethod
    async def list_queues(self) -> list[dict[str, Any]]:
        """Returns: every queue that has jobs or a pause setting, by name: queue_stats'
        counts plus `paused`."""

    @abc.abstractmethod
    async def set_queue_paused(self, queue: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a queue (idempotent). The dispatcher skips a paused queue's
        pending jobs; a resume wakes it.

        Args:
            queue: the queue's name (it need not have jobs).
            paused: True to pause, False to resume.
        Returns:
            queue_name, paused and paused_at (None when running).
        """

    @abc.abstractmethod
    async def throughput(self, seconds: int) -> dict[str, Any]:
        """Outcomes per second and enqueue-to-start latency over the last `seconds`.

        Args:
            seconds: the window, the current second included.
        Returns:
            `buckets`: one per second, oldest first, zeros included: t (epoch seconds of its
            start), succeeded, failed (retried) and dead (attempts used up), by the
            assignments' finished_at; `latency`: p50 and p99 in ms (None without samples) and
            `samples`, over the attempts that started in the window and have an outcome.
        """

    @abc.abstractmethod
    async def cached_snapshot(
        self, name: str, max_age: float, compute: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """Returns: the snapshot `name` if computed less than `max_age` seconds ago, else the
        result of `compute()`, stored for the others. Callers sharing the database wait for
        one that is computing, so it is computed at most once per `max_age`."""

    # -- dispatch ----------------------------------------------------------------------
    @abc.abstractmethod
    async def worker_slots(self, heartbeat_ttl: float) -> list[WorkerSlots]:
        """Returns: active workers with a fresh heartbeat and what they hold."""

    @abc.abstractmethod
    async def dispatch(
        self, worker_ids: Sequence[str], queue_limits: dict[str, int], choose: Chooser
    ) -> list[tuple[int, str]]:
        """One dispatch pass in one transaction.

        Locks the workers (a stopping worker waits for the pass), picks up to
        queue_limits[q] due pending jobs per queue that is not paused, with SKIP LOCKED
        (the paused set is read in the same statement), asks `choose` which
        worker takes which job, writes the assignments and wakes the workers.

        Returns:
            The (job id, worker id) pairs assigned.
        """

    @abc.abstractmethod
    async def next_due_in(self) -> float | None:
        """Returns: seconds on the database's clock until the next pending job is due (0 or
        less for one that came due in the last 10 ms), or None.
        """

    # -- worker side -------------------------------------------------------------------
    @abc.abstractmethod
    async def claim_assigned(self, worker_id: str, held: Sequence[int]) -> list[Assignment]:
        """Returns: the jobs assigned to the worker that it does not hold yet."""

    @abc.abstractmethod
    async def mark_running(self, starts: Sequence[tuple[int, int, float]]) -> set[int]:
        """Move assigned jobs to running: (job id, token, started epoch) each.

        Returns:
            The ids that moved (a stale token moves nothing: that job must not run).
        """

    @abc.abstractmethod
    async def report(self, outcomes: Sequence[Outcome]) -> list[tuple[int, str]]:
        """Write a batch of outcomes; each must present the job's current token.

        Returns:
            (job id, new status) for the outcomes that applied.
        """

    @abc.abstractmethod
    async def hand_back(self, worker_id: str) -> list[int]:
        """Return the worker's unstarted jobs to pending. Returns: their ids."""

    @abc.abstractmethod
    async def release_running(self, worker_id: str, reason: str) -> list[tuple[int, str]]:
        """Return the worker's started jobs to pending (or dead when out of attempts)."""

    @abc.abstractmethod
    async def subscribe(self, channel: str, callback: Callback) -> Subscription:
        """Call `callback` on every wake-up on `channel` (and after a reconnect)."""

    # -- registry ----------------------------------------------------------------------
    @abc.abstractmethod
    async def register_worker(self, worker: dict[str, Any]) -> dict[str, Any]:
        """Insert or revive a worker row as active. Returns: the row."""

    @abc.abstractmethod
    async def heartbeat(
        self, worker_id: str, health: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Refresh the heartbeat and store a health check. Returns: status, requested."""

    @abc.abstractmethod
    async def set_worker_status(
        self, worker_id: str, status: str, requested: str | None = None,
        from_states: Sequence[str] = WORKER_STATES,
    ) -> dict[str, Any] | None:
        """Set the status if the worker is in one of `from_states`.

        Returns:
            The updated row, or None for an unknown worker or another state.
        """

    @abc.abstractmethod
    async def request_worker(self, worker_id: str, request: str) -> dict[str, Any] | None:
        """Queue a control request (drain, stop). Returns: the row, or None."""

    @abc.abstractmethod
    async def get_worker(self, worker_id: str) -> dict[str, Any] | None:
        """Returns: the worker's row, or None."""

    @abc.abstractmethod
    async def list_workers(self, status: str | None = None) -> list[dict[str, Any]]:
        """Returns: workers with heartbeat age, in-flight count and latest health."""

    @abc.abstractmethod
    async def worker_stats(self) -> list[dict[str, Any]]:
        """Returns: per worker the assignments by outcome and the mean run time."""

    @abc.abstractmethod
    async def recent_health_checks(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        """Returns: the worker's latest health checks, newest first."""

    @abc.abstractmethod
    async def resource_stats(self, seconds: float) -> list[dict[str, Any]]:
        """Returns: per worker with health checks in the last `seconds`: its status and
        concurrency, the number of checks, those not healthy, and average and peak CPU %,
        memory, in-flight jobs and event-loop lag over the window, plus the latest values."""

    @abc.abstractmethod
    async def worker_assignments(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        """Returns: the worker's latest assignments, newest first: job_id, queue_name, token,
        assigned_at, started_at, finished_at, outcome."""

    # -- locks -------------------------------------------------------------------------
    @abc.abstractmethod
    async def acquire_lock(
        self, key: str, owner: str, ttl: float, worker_id: str | None = None
    ) -> tuple[int, datetime] | None:
        """Returns: (fencing token, expires_at), or None while another owner holds it."""

    @abc.abstractmethod
    async def renew_lock(
        self, key: str, owner: str, token: int, ttl: float
    ) -> tuple[int, datetime] | None:
        """Returns: (token, new expires_at), or None when the lease was lost."""

    @abc.abstractmethod
    async def release_lock(self, key: str, owner: str, token: int) -> bool:
        """Returns: True when the owner's lock was released."""

    @abc.abstractmethod
    async def get_lock(self, key: str) -> dict[str, Any] | None:
        """Returns: the lock row with `live` and `expires_in_s`, or None."""

    @abc.abstractmethod
    async def list_locks(self) -> list[dict[str, Any]]:
        """Returns: every lock row with `live` and `expires_in_s`."""

    @abc.abstractmethod
    async def clear_stale_locks(self, grace: float) -> list[str]:
        """Delete locks expired more than `grace` seconds ago. Returns: their keys."""

    @abc.abstractmethod
    async def db_now(self) -> datetime:
        """Returns: the database's clock."""

    # -- liveness and failover ---------------------------------------------------------
    @abc.abstractmethod
    async def hold_liveness(self, worker_id: str) -> Subscription:
        """Hold the worker's session-bound lock on a connection of its own (re-taken after
        a reconnect) until close(). A crashed process loses it at once.

        Raises:
            StorageError: it could not be taken (another session holds it).
        """

    @abc.abstractmethod
    async def liveness(self) -> list[dict[str, Any]]:
        """Returns: active and draining workers with heartbeat_age_s, registered_age_s and
        session_alive (whether their session-bound lock is held), on the database's clock.
        """

    @abc.abstractmethod
    async def db_uptime(self) -> tuple[datetime, float]:
        """Returns: when the database server started (a restart changes it), and how many
        seconds ago that was on its own clock.
        """

    @abc.abstractmethod
    async def recover_worker(
        self, worker_id: str, *, reason: str, event_type: str, quarantine_after: int,
        details: dict[str, Any], mark_failed: bool = True,
    ) -> dict[str, Any] | None:
        """In one transaction: mark the worker failed (when `mark_failed`; None if it was not
        active or draining), return its assigned and running jobs to pending (attempt counted;
        dead when exhausted; quarantined when `quarantine_after` workers died running it),
        release its locks and write a failover_events row.

        Returns:
            The event row plus `jobs` [(id, status)], `quarantined` ids and `locks` keys.
        """

    @abc.abstractmethod
    async def record_failover_event(
        self, event_type: str, worker_id: str | None, details: dict[str, Any]
    ) -> dict[str, Any]:
        """Write a failover_events row that moved no jobs (a guard held back, say)."""

    @abc.abstractmethod
    async def recover_timed_out(self, grace: float) -> list[tuple[int, str]]:
        """Return jobs running longer than their timeout + `grace` to pending (or dead)."""

    @abc.abstractmethod
    async def orphan_holders(self) -> list[str]:
        """Returns: ids of stopped, failed or unknown workers that still hold jobs."""

    @abc.abstractmethod
    async def failover_events(
        self, worker_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Returns: failover events, newest first."""

    # -- retention ---------------------------------------------------------------------
    @abc.abstractmethod
    async def cleanup_health_checks(
        self, older_than_days: float, *, batch: int = RETENTION_BATCH
    ) -> int:
        """Delete worker_health_checks rows checked more than `older_than_days` ago, `batch`
        rows a statement until none is left.

        Args:
            older_than_days: the age in days, fractions allowed; 0 deletes every row up to now.
            batch: the most rows one statement deletes.
        Returns:
            How many rows were deleted.
        Raises:
            ValidationFailed: `older_than_days` is negative or not a number.
        """

    @abc.abstractmethod
    async def cleanup_failover_events(
        self, older_than_days: float, *, batch: int = RETENTION_BATCH
    ) -> int:
        """Delete failover_events rows older than `older_than_days` (by failover_at), `batch`
        rows a statement.

        Args:
            older_than_days: the age in days, fractions allowed; 0 deletes every row up to now.
            batch: the most rows one statement deletes.
        Returns:
            How many rows were deleted.
        Raises:
            ValidationFailed: `older_than_days` is negative or not a number.
        """

    @abc.abstractmethod
    async def cleanup_orphaned_assignments(self, *, batch: int = RETENTION_BATCH) -> dict[str, int]:
        """Delete job_assignments rows whose job no longer exists, and close (finished_at
        now, outcome 'orphaned') the open rows (no outcome, no finished_at) whose job has moved
        on: it is no longer assigned or running under the row's token. The open row of a job
        assigned or running under its token is left alone, whatever a dispatch pass does
        meanwhile: each row is judged against its job in one statement.

        Args:
            batch: the most rows one statement looks at (deletes) or closes.
        Returns:
            `deleted` (rows of gone jobs) and `closed` (open rows of jobs that moved on).
        """

    @abc.abstractmethod
    async def cleanup_finished_jobs(
        self, older_than_days: float, statuses: Sequence[str] = ("succeeded", "cancelled"),
        *, batch: int = RETENTION_BATCH,
    ) -> int:
        """Delete the jobs in one of `statuses` that finished more than `older_than_days` ago,
        with their job_assignments rows, walking the jobs `batch` at a time. A pending,
        assigned or running job is never deleted, however old; a job retried meanwhile is
        judged by its current row.

        Args:
            older_than_days: the age of finished_at in days, fractions allowed.
            statuses: finished states (FINISHED_STATES) whose jobs go.
            batch: the most jobs one statement looks at.
        Returns:
            How many jobs were deleted.
        Raises:
            ValidationFailed: a bad `older_than_days`, or a status that is not a finished state.
        """

    # -- backup and restore ------------------------------------------------------------
    @abc.abstractmethod
    async def export_tables(self, write: Callable[[dict[str, Any] | list[Any]], Awaitable[None]]) -> None:
        """Read every table of TABLES and the sequences in one read-only snapshot, streaming
        (batches, never a whole table in memory), and hand them to `write` in this order:

        - one dict: `taken_at` (the snapshot's time), `schema` (the applied migrations:
          version, name), `tables` {table: rows} and `sequences` {name: last value handed out}
          (identity columns as "table.column", fencing tokens as "qstack_fencing_seq");
        - per table a dict: `table`, `columns` (names), `types` (qshared.backup.KINDS), then
          one list per row (ordered by primary key) of plain values: int, float, bool, str,
          aware datetime, bytes, and JSON columns as their JSON text (None is SQL NULL).

        Raises:
            StorageError: the database failed, or a column has a type the format lacks.
        """

    @abc.abstractmethod
    async def import_tables(self, records: Iterable[dict[str, Any] | list[Any]]) -> dict[str, Any]:
        """Load a backup into this migrated, empty database in one transaction.

        Args:
            records: a backup's header (its `sequences` are used) followed by, per table, a
                dict `table`, `columns`, `types` and its rows as lists of portable values
                (qshared.backup encoding), converted by this database's column types. Rows of
                schema_migrations are skipped: the target's own (it was just migrated) stay.
        Returns:
            `tables` {table: rows loaded} and `sequences` {name: value set}; each sequence
            is set to the backed-up value or the largest restored value, never lower than it
            was, so new ids and fencing tokens stay above every restored one.
        Raises:
            Conflict: a table other than schema_migrations already holds rows.
            BackupError: a record does not fit this schema or a value its column; nothing
                was changed.
            StorageError: the database failed; nothing was changed.
        """

    # -- performance -------------------------------------------------------------------
    @abc.abstractmethod
    async def performance_stats(self) -> dict[str, Any]:
        """What an operator checks when the database seems slow, for the qstack tables of
        this database (PostgreSQL: of the current schema).

        Returns:
            `server`: version, database size, connections and their maximum, cache hit
            ratio, transactions committed and rolled back, deadlocks, temp files and bytes;
            `tables`: per table estimated rows, sizes, sequential and index scans, dead rows,
            last (auto)vacuum and (auto)analyze; `indexes`: per index scans and size;
            `statements`: `available`, a `note` when not, and the slowest `rows` (from
            pg_stat_statements when it is installed); `latency_ms`: median, min and max of
            `samples` round trips of a trivial query.
        """


Opener = Callable[..., Awaitable[Storage]]
