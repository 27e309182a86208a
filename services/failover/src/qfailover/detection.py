"""Who is dead: the rules over heartbeat ages and session-bound locks (pure logic).

- Crash: the worker's session-bound database lock is free (its process, and so its session,
  is gone) and its last heartbeat is older than one interval plus a margin. Detected in
  about a heartbeat interval.
- Hang or partition: the lock is still held but no heartbeat came for the registration TTL.
- Guards (never mass-declare because something else failed): nothing is declared until the
  watcher has seen the database up for `settle` seconds (after an outage or a restart the
  workers need a moment to take their locks again and heartbeat); TTL deaths need the
  registry to have been healthy for a whole TTL (heartbeats go through it); and when more
  than half of the live workers (and more than one) fall silent at once with their locks
  held, that points at the registry or the network, so none of them is declared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Rules:
    """The timings the rules use."""

    heartbeat_interval: float
    ttl: float
    settle: float

    @property
    def crash_confirm(self) -> float:
        """Heartbeat age that, with a free lock, means a crash."""
        return self.heartbeat_interval + 0.5


@dataclass(slots=True)
class Verdict:
    """Workers to declare dead (id, event type, reason) and what was held back, and why."""

    dead: list[tuple[str, str, str]] = field(default_factory=list)
    held_back: list[str] = field(default_factory=list)
    note: str | None = None


def judge(
    workers: list[dict[str, Any]], rules: Rules, *, db_ok_for: float, registry_ok_for: float,
    force: bool = False,
) -> Verdict:
    """Apply the rules to the live workers (rows of Storage.liveness())."""
    verdict = Verdict()
    crashed = [
        w for w in workers
        if not w["session_alive"] and w["heartbeat_age_s"] >= rules.crash_confirm
        and w["registered_age_s"] >= rules.crash_confirm
    ]
    silent = [w for w in workers if w["session_alive"] and w["heartbeat_age_s"] >= rules.ttl]
    if not force and db_ok_for < rules.settle:
        verdict.held_back = [w["id"] for w in crashed + silent]
        if verdict.held_back:
            verdict.note = (f"database reachable for only {db_ok_for:.1f}s "
                            f"(settle {rules.settle:.0f}s): waiting before declaring anyone dead")
        return verdict
    for w in crashed:
        verdict.dead.append((w["id"], "worker_crashed",
                             f"session lock gone, last heartbeat {w['heartbeat_age_s']:.1f}s ago"))
    if silent and not force:
        if registry_ok_for < rules.ttl:
            verdict.held_back = [w["id"] for w in silent]
            verdict.note = (f"the registry has been healthy for only {registry_ok_for:.1f}s: "
                            "silent workers are not declared dead")
            return verdict
        if len(silent) > 1 and 2 * len(silent) > len(workers):
            verdict.held_back = [w["id"] for w in silent]
            verdict.note = (f"{len(silent)} of {len(workers)} workers fell silent at once with "
                            "their sessions alive: suspect the registry or the network")
            return verdict
    for w in silent:
        verdict.dead.append((w["id"], "worker_unresponsive",
                             f"no heartbeat for {w['heartbeat_age_s']:.1f}s "
                             f"(TTL {rules.ttl:.0f}s), session still open"))
    return verdict
