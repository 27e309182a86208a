"""Retention: the failover leader's scheduled clean-ups, and the same clean-ups on request.

Each interval the replica that holds the failover leader lease deletes old health checks,
old failover events, finished jobs past their retention (with their assignment rows) and
orphaned assignment rows, as the specification's weekly maintenance script does by hand.
Any replica runs a clean-up or a whole run when an operator asks. The storage deletes in
bounded batches, so a run over a large backlog never holds long locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from qfailover import metrics
from qshared.config import Settings
from qshared.errors import StorageError
from qshared.leases import Lease
from qshared.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_JOB_STATUSES = ("succeeded", "cancelled")
IDLE_CHECK = 1.0  # seconds between looks at the lease and the clock while waiting for a run


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """How long each table keeps its rows, in days (0: forever), and seconds between runs
    (0: no schedule)."""

    interval_s: float
    health_checks_days: float
    failover_events_days: float
    jobs_days: float
    dead_jobs_days: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            interval_s=settings.qstack_retention_interval,
            health_checks_days=settings.qstack_retention_health_checks_days,
            failover_events_days=settings.qstack_retention_failover_events_days,
            jobs_days=settings.qstack_retention_jobs_days,
            dead_jobs_days=settings.qstack_retention_dead_jobs_days,
        )

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


class Retention:
    """Runs the clean-ups: each interval while `lease` is held, and whenever asked."""

    def __init__(self, storage: Storage, policy: Policy, lease: Lease) -> None:
        self.storage = storage
        self.policy = policy
        self.lease = lease
        self.last_run: dict[str, Any] | None = None
        self._last_scheduled: float | None = None  # monotonic start of the last scheduled run
        self._lock = asyncio.Lock()  # one whole run at a time in this process

    # -- one clean-up each (the admin endpoints call these too) --------------------------
    async def health_checks(self, days: float) -> int:
        """Delete health checks older than `days`. Returns: how many."""
        deleted = await self.storage.cleanup_health_checks(days)
        self._count("worker_health_checks", deleted, f"older than {days:g} days")
        return deleted

    async def failover_events(self, days: float) -> int:
        """Delete failover events older than `days`. Returns: how many."""
        deleted = await self.storage.cleanup_failover_events(days)
        self._count("failover_events", deleted, f"older than {days:g} days")
        return deleted

    async def orphaned_assignments(self) -> dict[str, int]:
        """Delete the assignment rows of gone jobs, close those of jobs that moved on.

        Returns:
            `deleted` and `closed`.
        """
        result = await self.storage.cleanup_orphaned_assignments()
        self._count("job_assignments", result["deleted"], "whose job is gone")
        if result["closed"]:
            log.info("retention: closed %d open job_assignments rows whose job moved on",
                     result["closed"])
        return result

    async def finished_jobs(self, days: float, statuses: Sequence[str]) -> int:
        """Delete jobs in `statuses` finished more than `days` ago. Returns: how many."""
        deleted = await self.storage.cleanup_finished_jobs(days, statuses)
        self._count("jobs", deleted, f"{'/'.join(statuses)} more than {days:g} days ago")
        return deleted

    @staticmethod
    def _count(table: str, deleted: int, what: str) -> None:
        if deleted:
            log.info("retention: deleted %d %s rows %s", deleted, table, what)
            metrics.RETENTION_DELETED.labels(table=table).inc(deleted)

    # -- a whole run -------------------------------------------------------------------
    async def run_once(self, trigger: str = "manual") -> dict[str, Any]:
        """Every clean-up the policy asks for (a 0 setting skips its step). The first failure
        ends the run; the report keeps what was deleted before it and the error.

        Returns:
            The run's report (also kept as `last_run`).
        """
        async with self._lock:
            p = self.policy
            started_at, started = datetime.now(UTC), time.monotonic()
            deleted = dict.fromkeys(metrics.RETENTION_TABLES, 0)
            closed, skipped, error = 0, [], None
            # Finished jobs first: their assignment rows go with them, which leaves the
            # orphan sweep less to look at.
            steps = [
                ("jobs", p.jobs_days, "jobs",
                 lambda: self.finished_jobs(p.jobs_days, DEFAULT_JOB_STATUSES)),
                ("dead_jobs", p.dead_jobs_days, "jobs",
                 lambda: self.finished_jobs(p.dead_jobs_days, ("dead",))),
                ("orphaned_assignments", None, "job_assignments", self.orphaned_assignments),
                ("health_checks", p.health_checks_days, "worker_health_checks",
                 lambda: self.health_checks(p.health_checks_days)),
                ("failover_events", p.failover_events_days, "failover_events",
                 lambda: self.failover_events(p.failover_events_days)),
            ]
            try:
                for name, days, table, step in steps:
                    if days is not None and days <= 0:
                        skipped.append(name)
                        continue
                    result = await step()
                    if isinstance(result, dict):
                        deleted[table] += result["deleted"]
                        closed += result["closed"]
                    else:
                        deleted[table] += result
            except StorageError as exc:
                error = exc.message
                log.warning("retention run failed (the next one retries): %s", exc.message)
            except Exception as exc:  # a scheduled run must not take the loop down
                error = f"{type(exc).__name__}: {exc}"
                log.exception("retention run crashed")
            finished = time.monotonic()
            report = {
                "trigger": trigger, "started_at": started_at,
                "finished_at": datetime.now(UTC), "duration_s": round(finished - started, 3),
                "deleted": deleted, "closed_assignments": closed, "skipped": skipped,
                "error": error,
            }
            metrics.RETENTION_RUNS.labels(result="failed" if error else "ok").inc()
            if error is None:
                log.info("retention run (%s) done in %.2fs: deleted %s, closed %d assignments",
                         trigger, finished - started,
                         ", ".join(f"{n} {t}" for t, n in deleted.items()), closed)
            self.last_run = report
            return report

    # -- the schedule ------------------------------------------------------------------
    @property
    def scheduled(self) -> bool:
        """Whether this replica runs the schedule now: it leads and the interval is set."""
        return self.policy.interval_s > 0 and self.lease.is_leader

    def next_run_in(self) -> float | None:
        """Seconds until the next scheduled run here (None when this replica runs none)."""
        if not self.scheduled:
            return None
        if self._last_scheduled is None:
            return 0.0
        return max(self._last_scheduled + self.policy.interval_s - time.monotonic(), 0.0)

    async def run(self, stop: asyncio.Event) -> None:
        """While leader, one run per QSTACK_RETENTION_INTERVAL (the first when the lease is
        won); a failed run is retried at the next interval."""
        if self.policy.interval_s <= 0:
            log.info("retention schedule off (QSTACK_RETENTION_INTERVAL=0)")
            return
        while not stop.is_set():
            if self.next_run_in() == 0.0:
                self._last_scheduled = time.monotonic()
                await self.run_once("schedule")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(),
                                       timeout=min(self.policy.interval_s, IDLE_CHECK))
