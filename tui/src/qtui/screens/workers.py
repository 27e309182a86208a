"""Workers: a sortable, filterable table; drain, stop and deregister; enter for the detail."""

from __future__ import annotations

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

STATUS_STYLE = {"active": "green", "draining": "yellow", "stopped": "dim", "failed": "bold red"}
HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red"}


def styled(value: str | None, styles: dict[str, str]) -> Text:
    return Text(value or "-", style=styles.get(value or "", ""))


def _load(w: dict[str, Any]) -> str:
    return f"{w.get('in_flight') or 0}/{w['concurrency']}"


COLUMNS = [
    Col("id", "id", lambda w: w["id"]),
    Col("host", "host", lambda w: w["hostname"]),
    Col("queues", "queues", lambda w: ",".join(w["queues"])),
    Col("load", "busy", _load, sort=lambda w: (w.get("in_flight") or 0) / max(w["concurrency"], 1),
        right=True),
    Col("status", "status", lambda w: styled(w["status"], STATUS_STYLE)),
    Col("health", "health", lambda w: styled(w.get("health"), HEALTH_STYLE)),
    Col("beat", "beat", lambda w: fmt.duration(w.get("heartbeat_age_s")),
        sort=lambda w: w.get("heartbeat_age_s"), right=True),
    Col("cpu", "cpu", lambda w: "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}%",
        sort=lambda w: w.get("cpu_percent"), right=True),
    Col("mem", "mem", lambda w: fmt.size(w.get("memory_bytes")), sort=lambda w: w.get("memory_bytes"),
        right=True),
    Col("lag", "lag", lambda w: fmt.millis(w.get("loop_lag_ms")), sort=lambda w: w.get("loop_lag_ms"),
        right=True),
]


def worker_actions(worker_id: str) -> dict[str, Action]:
    """The destructive worker actions, each with its confirmation question."""
    return {
        "drain": Action("drain_worker", (worker_id,), label=f"drain {worker_id}",
                        confirm=f"Drain worker {worker_id}? It finishes its jobs and takes no new ones."),
        "stop": Action("stop_worker", (worker_id,), label=f"stop {worker_id}",
                       confirm=f"Stop worker {worker_id}? It finishes its jobs, then exits."),
        "deregister": Action("deregister_worker", (worker_id,), label=f"deregister {worker_id}",
                             confirm=f"Deregister worker {worker_id}? It is marked stopped."),
    }


class WorkersScreen(DashboardScreen):
    """Every registered worker, live."""

    TITLE = "Workers"
    source = "registry"
    filterable = True

    BINDINGS = [
        Binding("slash", "open_filter", "Filter"),
        Binding("enter", "detail", "Detail", show=False),
        Binding("d", "act('drain')", "Drain"),
        Binding("x", "act('stop')", "Stop"),
        Binding("D", "act('deregister')", "Deregister"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="caption", classes="caption")
        yield LiveTable(COLUMNS, item_key=lambda w: w["id"], id="workers", pure=True)

    def show(self, snapshot: Snapshot, now: float) -> None:
        table = self.query_one(LiveTable)
        table.show(snapshot.workers)
        counts: dict[str, int] = {}
        for w in snapshot.workers:
            counts[w["status"]] = counts.get(w["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        shown = f"{len(table.items)} of {len(snapshot.workers)}" if table.filter_text else \
            f"{len(snapshot.workers)}"
        self.query_one("#caption", Static).update(
            self.caption(snapshot, f"Workers {shown}" + (f" ({summary})" if summary else "")))
        self.mark_stale(table, snapshot)

    def action_detail(self) -> None:
        worker = self.query_one(LiveTable).selected
        if worker is not None:
            self.open_detail(worker)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        self.open_detail(event.item)

    def open_detail(self, worker: dict[str, Any]) -> None:
        from qtui.screens.worker_detail import WorkerDetailScreen

        self.app.push_screen(WorkerDetailScreen(worker["id"]))

    def action_act(self, what: str) -> None:
        worker = self.query_one(LiveTable).selected
        if worker is not None:
            self.request(worker_actions(worker["id"])[what])
