"""Queues: counts by state, rates, oldest pending age; pause and resume; enter for its jobs."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from qtui import formatting as fmt
from qtui.messages import Action, JobQueryChanged
from qtui.screens.base import DashboardScreen
from qtui.snapshot import JobQuery, Snapshot
from qtui.widgets.tables import Col, LiveTable


def _count(key: str, style: str = "") -> Col:
    return Col(key, {"failed": "retrying", "scheduled": "sched"}.get(key, key),
               lambda q: Text(fmt.number(q.get(key)), style=style if q.get(key) else ""),
               sort=lambda q: q.get(key), right=True)


def _state(q: dict[str, Any]) -> Text:
    return Text("paused", style="bold yellow") if q.get("paused") else Text("active", style="green")


def _oldest(q: dict[str, Any]) -> Text:
    age = q.get("oldest_pending_age_s") or 0.0
    return Text(fmt.duration(age) if age else "-", style="bold red" if age >= 60 else "")


class QueuesScreen(DashboardScreen):
    """Every queue with jobs (or paused), live."""

    TITLE = "Queues"
    source = "scheduler"
    filterable = True

    BINDINGS = [
        Binding("slash", "open_filter", "Filter"),
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("enter", "jobs", "Jobs", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        def rates() -> dict[str, float]:
            return self.qtui.snapshot.queue_rates

        columns = [
            Col("queue", "queue", lambda q: q["queue"]),
            Col("state", "state", _state, sort=lambda q: bool(q.get("paused"))),
            _count("pending"), _count("scheduled"), _count("assigned"), _count("running"),
            Col("rate", "done/s", lambda q: "-" if q["queue"] not in rates() else
                f"{rates()[q['queue']]:.1f}", sort=lambda q: rates().get(q["queue"]), right=True),
            _count("succeeded"), _count("failed", "yellow"), _count("dead", "bold red"),
            _count("cancelled"),
            Col("oldest", "oldest", _oldest, sort=lambda q: q.get("oldest_pending_age_s"), right=True),
        ]
        yield Static(id="caption", classes="caption")
        yield LiveTable(columns, item_key=lambda q: q["queue"], id="queues")

    def show(self, snapshot: Snapshot, now: float) -> None:
        table = self.query_one(LiveTable)
        table.show(snapshot.queues)
        paused = sum(1 for q in snapshot.queues if q.get("paused"))
        pending = sum(q["pending"] for q in snapshot.queues)
        text = f"Queues {len(snapshot.queues)}, {fmt.number(pending)} pending"
        if paused:
            text += f", {paused} paused"
        self.query_one("#caption", Static).update(self.caption(snapshot, text))
        self.mark_stale(table, snapshot)

    def action_toggle_pause(self) -> None:
        queue = self.query_one(LiveTable).selected
        if queue is None:
            return
        name = queue["queue"]
        if queue.get("paused"):
            self.request(Action("resume_queue", (name,), label=f"resume queue {name}"))
        else:
            self.request(Action("pause_queue", (name,), label=f"pause queue {name}"))

    def action_jobs(self) -> None:
        queue = self.query_one(LiveTable).selected
        if queue is not None:
            self.open_jobs(queue)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        self.open_jobs(event.item)

    def open_jobs(self, queue: dict[str, Any]) -> None:
        self.post_message(JobQueryChanged(JobQuery(queue=queue["queue"])))
        self.app.switch_mode("jobs")
