"""Failover: the failover_events log, the watcher's state; run a recovery pass."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from qtui import formatting as fmt
from qtui.messages import Action
from qtui.screens.base import DashboardScreen
from qtui.snapshot import Snapshot
from qtui.widgets.tables import Col, LiveTable

EVENT_STYLE = {"worker_crashed": "bold red", "worker_unresponsive": "red", "held_back": "yellow",
               "orphans_recovered": "cyan"}


def event_type(e: dict[str, Any]) -> Text:
    return Text(e["event_type"], style=EVENT_STYLE.get(e["event_type"], ""))


def details(e: dict[str, Any]) -> str:
    d = e.get("details")
    if not d:
        return ""
    if isinstance(d, dict):
        parts = [str(d[k]) for k in ("reason", "note") if d.get(k)]
        if d.get("quarantined"):
            parts.append(f"quarantined jobs {d['quarantined']}")
        if parts:
            return "; ".join(parts)
    return json.dumps(d, sort_keys=True, default=str)


COLUMNS = [
    Col("at", "at", lambda e: fmt.stamp(e["failover_at"]), sort=lambda e: -e["id"]),
    Col("type", "event", event_type),
    Col("failed", "worker", lambda e: e.get("failed_worker_id") or "-"),
    Col("recovered", "back", lambda e: str(e.get("jobs_recovered", 0)),
        sort=lambda e: e.get("jobs_recovered"), right=True),
    Col("dead", "dead", lambda e: str(e.get("jobs_dead", 0)), sort=lambda e: e.get("jobs_dead"),
        right=True),
    Col("detect", "detect", lambda e: fmt.millis(e.get("detection_ms")),
        sort=lambda e: e.get("detection_ms"), right=True),
    Col("recover", "recover", lambda e: fmt.millis(e.get("recovery_ms")),
        sort=lambda e: e.get("recovery_ms"), right=True),
    Col("details", "details", lambda e: fmt.first_line(details(e), 70)),
]


def recover_summary(report: dict[str, Any]) -> str:
    """One line saying what a failover pass did."""
    parts = [f"{len(report.get('declared_dead') or [])} declared dead",
             f"{report.get('jobs_recovered', 0)} jobs back to pending",
             f"{report.get('jobs_dead', 0)} dead"]
    if report.get("stale_locks"):
        parts.append(f"{len(report['stale_locks'])} stale locks released")
    if report.get("held_back"):
        parts.append(f"held back: {', '.join(report['held_back'])}")
    if report.get("note"):
        parts.append(str(report["note"]))
    return "; ".join(parts)


class FailoverScreen(DashboardScreen):
    """The failover watcher's log, newest first, live."""

    TITLE = "Failover"
    source = "failover"
    filterable = True

    BINDINGS = [
        Binding("slash", "open_filter", "Filter"),
        Binding("r", "recover(False)", "Recover"),
        Binding("F", "recover(True)", "Force recover"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="caption", classes="caption")
        yield LiveTable(COLUMNS, item_key=lambda e: e["id"], id="events", pure=True)

    def show(self, snapshot: Snapshot, now: float) -> None:
        table = self.query_one(LiveTable)
        table.show(snapshot.events)
        health = snapshot.failover_health or {}
        checks = health.get("checks") or {}
        leader = "this replica leads" if checks.get("failover_leader") else "standby"
        system = ((snapshot.system or {}).get("checks") or {}).get("failover_leader")
        state = f"leader {system}" if system else leader if health else "watcher state unknown"
        text = f"Failover events {len(snapshot.events)}, {state}"
        if checks.get("note"):
            text += f", note: {checks['note']}"
        self.query_one("#caption", Static).update(self.caption(snapshot, text))
        self.mark_stale(table, snapshot)

    def action_recover(self, force: bool) -> None:
        what = "a forced failover pass (skips the guards against mass declarations)" if force \
            else "a failover pass now"
        self.request(Action("recover", kwargs={"force": force},
                            label="forced recovery" if force else "recovery",
                            confirm=f"Run {what}? Dead workers' jobs go back to pending."))
