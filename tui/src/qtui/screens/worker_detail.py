"""One worker: its registration, recent health checks and assignments; the worker actions."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from qtui import formatting as fmt
from qtui.screens.base import DetailScreen, Section, pairs_grid
from qtui.screens.workers import HEALTH_STYLE, STATUS_STYLE, styled, worker_actions
from qtui.snapshot import Snapshot
from qtui.widgets.tables import Col, LiveTable

CHECK_COLUMNS = [
    Col("at", "checked", lambda h: fmt.clock(h.get("checked_at")), sort=lambda h: h.get("checked_at")),
    Col("status", "status", lambda h: styled(h.get("status"), HEALTH_STYLE)),
    Col("cpu", "cpu", lambda h: "-" if h.get("cpu_percent") is None else f"{h['cpu_percent']:.0f}%"),
    Col("mem", "mem", lambda h: fmt.size(h.get("memory_bytes"))),
    Col("busy", "busy", lambda h: str(h.get("in_flight") if h.get("in_flight") is not None else "-")),
    Col("lag", "lag", lambda h: fmt.millis(h.get("loop_lag_ms"))),
    Col("why", "reasons", lambda h: ", ".join((h.get("details") or {}).get("reasons") or [])),
]

ASSIGNMENT_COLUMNS = [
    Col("job", "job", lambda a: str(a["job_id"]), sort=lambda a: a["job_id"]),
    Col("queue", "queue", lambda a: a.get("queue") or "-"),
    Col("token", "token", lambda a: str(a.get("token", "-")), sort=lambda a: a.get("token")),
    Col("assigned", "assigned", lambda a: fmt.clock(a.get("assigned_at")),
        sort=lambda a: a.get("assigned_at")),
    Col("started", "started", lambda a: fmt.clock(a.get("started_at"))),
    Col("finished", "finished", lambda a: fmt.clock(a.get("finished_at"))),
    Col("outcome", "outcome", lambda a: a.get("outcome") or "in flight"),
]


def worker_fields(w: dict[str, Any], now: float) -> Table:
    """The worker's registration as two columns of label/value pairs."""
    status = styled(w["status"], STATUS_STYLE)
    if w.get("requested"):
        status.append(f" ({w['requested']} requested)", style="italic")
    pairs = [
        ("status", status), ("health", styled(w.get("health"), HEALTH_STYLE)),
        ("host", f"{w['hostname']} (pid {w['pid']})"), ("version", w.get("version") or "-"),
        ("queues", ", ".join(w["queues"])),
        ("slots", f"{w.get('in_flight') or 0} busy of {w['concurrency']} (prefetch {w.get('prefetch', 0)})"),
        ("started", f"{fmt.age(w['started_at'], now)} ago ({fmt.when(w['started_at'], now)})"),
        ("heartbeat", f"{fmt.duration(w.get('heartbeat_age_s'))} ago"),
        ("cpu", "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}%"),
        ("memory", fmt.size(w.get("memory_bytes"))),
        ("loop lag", fmt.millis(w.get("loop_lag_ms"))), ("admin", w.get("admin_url") or "-"),
    ]
    return pairs_grid(pairs)


class WorkerDetailScreen(DetailScreen):
    """A worker's detail, live."""

    TITLE = "Worker"
    kind = "worker"
    source = "registry"

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("d", "act('drain')", "Drain"),
        Binding("x", "act('stop')", "Stop"),
        Binding("D", "act('deregister')", "Deregister"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Section(f"worker {self.key}", id="worker-fields")
        yield Static(id="checks-caption", classes="caption")
        yield LiveTable(CHECK_COLUMNS, item_key=lambda h: h.get("checked_at"), id="checks",
                        sort_by=0, reverse=True, pure=True)
        yield Static(id="assignments-caption", classes="caption")
        yield LiveTable(ASSIGNMENT_COLUMNS, item_key=lambda a: (a["job_id"], a.get("token")),
                        id="assignments", sort_by=3, reverse=True, pure=True)

    def on_mount(self) -> None:
        self.query_one("#worker-fields", Section).update(Text("loading…", style="italic"))
        super().on_mount()

    def show(self, snapshot: Snapshot, now: float) -> None:
        # The list row is fresher than nothing while the detail request is in flight.
        if self.data is None:
            row = next((w for w in snapshot.workers if w["id"] == self.key), None)
            if row is not None:
                self.show_detail(row, now)
        for table in self.query(LiveTable):
            self.mark_stale(table, snapshot)

    def show_detail(self, data: dict[str, Any], now: float) -> None:
        snapshot = self.qtui.snapshot
        self.query_one("#worker-fields", Section).update(worker_fields(data, now))
        checks = data.get("health_checks") or []
        assignments = data.get("assignments")
        self.query_one("#checks", LiveTable).show(checks)
        self.query_one("#checks-caption", Static).update(
            self.caption(snapshot, f"Recent health checks ({len(checks)})"))
        self.query_one("#assignments", LiveTable).show(assignments or [])
        label = (f"Recent assignments ({len(assignments)})" if assignments is not None
                 else "Recent assignments (not served by this registry)")
        self.query_one("#assignments-caption", Static).update(self.caption(snapshot, label))

    def action_act(self, what: str) -> None:
        self.request(worker_actions(self.key)[what])
