"""`worker validate-pool`: what is wrong with the pool, judged from plain rows.

Each check looks at the registry's view of the workers, the queues and the locks and names
what it finds. A finding is a problem an operator should act on; the pool is healthy when
no check finds anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from qshared.leases import LEADER_ROLES, leader_key
from qshared.pool import config_skew

LIVE_STATES = ("active", "draining")
CHECKS = (
    "workers", "unserved_queues", "stale_heartbeats", "version_skew", "config_skew",
    "orphaned_jobs", "lock_leaks", "leaders", "clock_skew",
)


@dataclass(frozen=True)
class Limits:
    """When a finding becomes a problem."""

    ttl: float  # seconds without a heartbeat before a worker counts as gone
    lock_grace: float  # seconds an expired lock may linger before the watcher removes it
    max_clock_skew_ms: float


@dataclass(frozen=True)
class Problem:
    check: str
    subject: str
    message: str


def _live(workers: Iterable[Mapping[str, Any]], ttl: float) -> list[Mapping[str, Any]]:
    return [w for w in workers if w["status"] in LIVE_STATES
            and (w.get("heartbeat_age_s") or 0.0) <= ttl]


def _queues_of(worker: Mapping[str, Any]) -> list[str]:
    queues = worker["queues"]
    return [q for q in queues.split(",") if q] if isinstance(queues, str) else list(queues)


def diagnose(
    workers: Sequence[Mapping[str, Any]], queues: Sequence[Mapping[str, Any]],
    locks: Sequence[Mapping[str, Any]], limits: Limits,
) -> list[Problem]:
    """Every problem found, in check order.

    `workers` are `list_workers` rows (status, heartbeat age, queues, version, config,
    in_flight, clock_skew_ms), `queues` are `list_queues` rows, `locks` `list_locks` rows.
    """
    problems: list[Problem] = []
    live = _live(workers, limits.ttl)
    active = [w for w in live if w["status"] == "active"]
    by_id = {w["id"]: w for w in workers}

    if not active:
        problems.append(Problem("workers", "pool", "no active worker with a fresh heartbeat"))

    served = {q for w in active for q in _queues_of(w)}
    draining_only = {q for w in live for q in _queues_of(w)} - served
    for q in queues:
        waiting = q["pending"] + q["scheduled"] + q["assigned"]
        name = q["queue_name"]
        if waiting and name not in served:
            why = ("only draining workers serve it" if name in draining_only
                   else "no active worker serves it")
            paused = " (the queue is paused too)" if q.get("paused") else ""
            problems.append(Problem(
                "unserved_queues", name, f"{waiting} job(s) waiting and {why}{paused}"))

    for w in workers:
        age = w.get("heartbeat_age_s") or 0.0
        if w["status"] in LIVE_STATES and age > limits.ttl:
            problems.append(Problem(
                "stale_heartbeats", w["id"],
                f"{w['status']} but its last heartbeat is {age:.1f}s old (TTL {limits.ttl:g}s):"
                " the failover watcher has not taken it down"))

    versions: dict[str, list[str]] = {}
    for w in live:
        versions.setdefault(w.get("version") or "?", []).append(w["id"])
    if len(versions) > 1:
        spread = "; ".join(f"{v}: {', '.join(ids)}" for v, ids in sorted(versions.items()))
        problems.append(Problem("version_skew", "pool", f"workers run different versions ({spread})"))

    for key, values in config_skew({w["id"]: w.get("config") or {} for w in live}).items():
        spread = "; ".join(f"{v!r}: {', '.join(ids)}" for v, ids in sorted(values.items()))
        problems.append(Problem("config_skew", key, f"workers disagree on {key} ({spread})"))

    for w in workers:
        if w["status"] not in LIVE_STATES and (w.get("in_flight") or 0) > 0:
            problems.append(Problem(
                "orphaned_jobs", w["id"],
                f"{w['status']} but still holds {w['in_flight']} assigned or running job(s):"
                " run `qctl worker cleanup-crashed`"))

    for lock in locks:
        key, holder = lock["lock_key"], lock.get("worker_id")
        expires_in = lock.get("expires_in_s") or 0.0
        if lock["live"] and holder and (holder not in by_id
                                        or by_id[holder]["status"] not in LIVE_STATES):
            state = by_id[holder]["status"] if holder in by_id else "unknown"
            problems.append(Problem(
                "lock_leaks", key,
                f"held by worker {holder} ({state}) for another {expires_in:.1f}s"))
        elif not lock["live"] and -expires_in > limits.lock_grace:
            problems.append(Problem(
                "lock_leaks", key,
                f"expired {-expires_in:.0f}s ago and not cleaned up (grace {limits.lock_grace:g}s):"
                " run `qctl queue clear-stale-locks`"))

    leaders = {lock["lock_key"] for lock in locks if lock["live"]}
    for role in LEADER_ROLES:
        if leader_key(role) not in leaders:
            problems.append(Problem("leaders", role, f"no {role} holds the leader lease"))

    for w in live:
        skew = w.get("clock_skew_ms")
        if skew is not None and abs(skew) > limits.max_clock_skew_ms:
            direction = "ahead of" if skew > 0 else "behind"
            problems.append(Problem(
                "clock_skew", w["id"],
                f"its clock is {abs(skew):.0f} ms {direction} the database's"
                f" (limit {limits.max_clock_skew_ms:g} ms)"))
    return problems


def report(problems: Sequence[Problem], *, workers: int, queues: int) -> dict[str, Any]:
    """The reply: ok, each check with its number of findings, and the findings."""
    counts = {check: 0 for check in CHECKS}
    for p in problems:
        counts[p.check] += 1
    return {"ok": not problems, "workers": workers, "queues": queues, "checks": counts,
            "problems": [asdict(p) for p in problems]}
