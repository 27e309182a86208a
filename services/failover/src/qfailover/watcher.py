"""The failover watcher: while leader, judges the workers each interval and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import httpx

from qfailover import metrics
from qfailover.detection import Rules, judge
from qshared.config import Settings
from qshared.errors import StorageError
from qshared.leases import Lease, leader_key
from qshared.metrics import LEADER
from qshared.storage import Storage

log = logging.getLogger(__name__)

LEADER_KEY = leader_key("failover")
HELD_BACK_EVENT_EVERY = 60.0  # seconds between failover_events rows for a held-back pass


class Watcher:
    """Detection and recovery; `pass_once` is also what the admin endpoints run."""

    def __init__(self, storage: Storage, settings: Settings, owner: str) -> None:
        self.storage = storage
        self.settings = settings
        self.rules = Rules(
            heartbeat_interval=settings.worker_health_check_interval,
            ttl=settings.worker_registration_ttl,
            settle=max(3 * settings.worker_health_check_interval, 3.0),
        )
        self.lease = Lease(storage, LEADER_KEY, owner, settings.qstack_leader_ttl)
        headers = {"Authorization": f"Bearer {settings.qstack_token}"} if settings.qstack_token else {}
        self._registry = httpx.AsyncClient(
            base_url=settings.qstack_registry_url, headers=headers, timeout=1.5
        )
        self._db_ok_since: float | None = None
        self._db_started: datetime | None = None
        self._db_failed = False
        self._registry_ok_since: float | None = None
        self._registry_checked_at: float | None = None
        self._look_gap = max(2 * settings.failover_check_interval, 2.0)
        self._last_held_event = 0.0
        self._lock = asyncio.Lock()  # one pass at a time in this process
        self.last_pass_at: float | None = None
        self.last_note: str | None = None

    # -- observations ------------------------------------------------------------------
    async def _observe_database(self) -> float:
        """Seconds the database has been continuously reachable (and not restarted)."""
        now = time.monotonic()
        try:
            started, uptime = await self.storage.db_uptime()
        except StorageError:
            self._db_ok_since = None
            self._db_failed = True
            raise
        if self._db_started is not None and started != self._db_started:
            log.warning("the database restarted (at %s)", started)
            self._db_ok_since = now
        elif self._db_ok_since is None:
            # At our own start nothing says the database was away: count from its start.
            # After an outage we saw, count from now.
            self._db_ok_since = now if self._db_failed else now - uptime
        self._db_failed = False
        self._db_started = started
        return now - self._db_ok_since

    async def _observe_registry(self) -> float:
        """Seconds the registry has been continuously healthy."""
        now = time.monotonic()
        try:
            resp = await self._registry.get(self.settings.health_check_endpoint)
            # The registry's /health is the system's (a missing leader makes it 503); the
            # question here is only whether the registry takes heartbeats: it answers and
            # reaches the database.
            ok = resp.json().get("checks", {}).get("database") == "ok"
        except (httpx.HTTPError, ValueError, AttributeError):
            ok = False
        gap = now - self._registry_checked_at if self._registry_checked_at is not None else None
        self._registry_checked_at = now
        if not ok:
            self._registry_ok_since = None
            return 0.0
        # "healthy since" only holds if we kept looking: after a long gap between passes
        # (a manual pass with the loop idle, say) the registry counts as healthy from now.
        if self._registry_ok_since is None or gap is None or gap > self._look_gap:
            self._registry_ok_since = now
        return now - self._registry_ok_since

    # -- one pass ----------------------------------------------------------------------
    async def pass_once(self, *, force: bool = False, orphans: bool = True) -> dict[str, Any]:
        """Judge, recover the dead, sweep timed-out jobs, orphans and stale locks."""
        async with self._lock:
            report: dict[str, Any] = {"declared_dead": [], "jobs_recovered": 0, "jobs_dead": 0,
                                      "quarantined": [], "timed_out": 0, "orphans": [],
                                      "stale_locks": [], "held_back": [], "note": None}
            db_ok_for = await self._observe_database()
            registry_ok_for = await self._observe_registry()
            workers = await self.storage.liveness()
            verdict = judge(workers, self.rules, db_ok_for=db_ok_for,
                            registry_ok_for=registry_ok_for, force=force)
            report["held_back"], report["note"] = verdict.held_back, verdict.note
            if verdict.held_back:
                await self._held_back(verdict.held_back, verdict.note or "")
            for worker_id, event_type, reason in verdict.dead:
                event = await self.storage.recover_worker(
                    worker_id, reason=f"worker {worker_id} died: {reason}", event_type=event_type,
                    quarantine_after=self.settings.qstack_quarantine_after,
                    details={"rule": event_type, "forced": force},
                )
                if event is not None:
                    self._record(event, report)
            timed_out = await self.storage.recover_timed_out(self.settings.qstack_timeout_grace)
            if timed_out:
                log.warning("recovered %d jobs running past timeout + grace", len(timed_out))
                metrics.TIMED_OUT.inc(len(timed_out))
            report["timed_out"] = len(timed_out)
            if orphans:
                for holder in await self.storage.orphan_holders():
                    event = await self.storage.recover_worker(
                        holder, reason=f"worker {holder} stopped without handing its jobs back",
                        event_type="orphans_recovered", mark_failed=False,
                        quarantine_after=self.settings.qstack_quarantine_after,
                        details={"rule": "orphans"},
                    )
                    if event is not None and event["jobs"]:
                        report["orphans"].append(holder)
                        self._record(event, report)
            report["stale_locks"] = await self.storage.clear_stale_locks(
                self.settings.qstack_lock_grace
            )
            self.last_pass_at = time.monotonic()
            self.last_note = verdict.note
            return report

    def _record(self, event: dict[str, Any], report: dict[str, Any]) -> None:
        worker_id = event["failed_worker_id"]
        recovered, dead = event["jobs_recovered"], event["jobs_dead"]
        log.warning("%s: %s; %d jobs back to pending, %d dead, %d quarantined",
                    event["event_type"], worker_id, recovered, dead, len(event["quarantined"]))
        metrics.FAILOVERS.labels(event_type=event["event_type"]).inc()
        metrics.RESCUED.inc(recovered)
        metrics.QUARANTINED.inc(len(event["quarantined"]))
        if event["detection_ms"] is not None:
            metrics.RESCUE_SECONDS.observe(
                (event["detection_ms"] + (event["recovery_ms"] or 0)) / 1000
            )
        if event["event_type"] != "orphans_recovered":
            report["declared_dead"].append(worker_id)
        report["jobs_recovered"] += recovered
        report["jobs_dead"] += dead
        report["quarantined"] += event["quarantined"]

    async def _held_back(self, workers: list[str], note: str) -> None:
        metrics.HELD_BACK.inc()
        now = time.monotonic()
        if now - self._last_held_event < HELD_BACK_EVENT_EVERY:
            return
        self._last_held_event = now
        log.warning("not declaring %s dead: %s", ", ".join(workers), note)
        with contextlib.suppress(StorageError):
            await self.storage.record_failover_event(
                "held_back", None, {"workers": workers, "note": note}
            )

    # -- the loop ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Chase the lease; while leader, one pass per FAILOVER_CHECK_INTERVAL."""
        lease_stop = asyncio.Event()
        lease_task = asyncio.create_task(self.lease.run(lease_stop), name="failover-lease")
        interval = self.settings.failover_check_interval
        try:
            while not stop.is_set():
                leader = self.lease.is_leader
                LEADER.labels(role="failover").set(1 if leader else 0)
                if leader:
                    try:
                        await self.pass_once()
                    except StorageError as exc:
                        log.warning("failover pass failed: %s", exc)
                    except Exception:  # the loop must outlive any single failure
                        log.exception("failover pass crashed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            LEADER.labels(role="failover").set(0)
            lease_stop.set()
            await lease_task
            await self._registry.aclose()
