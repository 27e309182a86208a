"""One job: fields, payload, result, attempts and assignment history, last error with traceback."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from qtui import formatting as fmt
from qtui.screens.base import DetailScreen, Section, pairs_grid
from qtui.screens.jobs import job_actions, job_status
from qtui.snapshot import Snapshot
from qtui.widgets.tables import Col, LiveTable

HISTORY_COLUMNS = [
    Col("n", "#", lambda a: str(a["n"]), sort=lambda a: a["n"]),
    Col("worker", "worker", lambda a: a.get("worker_id") or "-"),
    Col("token", "token", lambda a: str(a.get("token", "-"))),
    Col("assigned", "assigned", lambda a: fmt.stamp(a.get("assigned_at"))),
    Col("ran", "ran for", lambda a: fmt.duration(
        (fmt.epoch(a.get("finished_at")) or 0) - (fmt.epoch(a.get("started_at")) or 0))
        if a.get("finished_at") and a.get("started_at") else "-"),
    Col("outcome", "outcome", lambda a: a.get("outcome") or "in flight"),
]


def pretty(value: Any) -> str:
    """A JSON value, indented (a bare string as it is)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def job_fields(job: dict[str, Any], now: float) -> Table:
    pairs = [
        ("queue", job["queue"]), ("task", job["task"]),
        ("status", job_status(job)), ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("priority", str(job.get("priority", 0))), ("worker", job.get("worker_id") or "-"),
        ("created", f"{fmt.age(job.get('created_at'), now)} ago ({fmt.when(job.get('created_at'), now)})"),
        ("run at", fmt.when(job.get("run_at"), now)),
        ("started", fmt.when(job.get("started_at"), now)),
        ("finished", fmt.when(job.get("finished_at"), now)),
        ("timeout", fmt.duration(job.get("timeout_s"))), ("lock key", job.get("lock_key") or "-"),
        ("unique key", job.get("unique_key") or "-"), ("", ""),
    ]
    return pairs_grid(pairs)


class JobDetailScreen(DetailScreen):
    """A job's detail, live."""

    TITLE = "Job"
    kind = "job"
    source = "scheduler"

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "act('retry')", "Retry"),
        Binding("c", "act('cancel')", "Cancel"),
    ]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="job-body"):
            yield Section(f"job {self.key}", id="job-fields")
            yield Static(id="history-caption", classes="caption")
            yield LiveTable(HISTORY_COLUMNS, item_key=lambda a: a["n"], id="history", pure=True)
            yield Section("last error", id="job-error", classes="error")
            yield Section("payload", id="job-payload")
            yield Section("result", id="job-result")

    def on_mount(self) -> None:
        self.query_one("#job-fields", Section).update(Text("loading…", style="italic"))
        super().on_mount()

    def show(self, snapshot: Snapshot, now: float) -> None:
        # The list row is fresher than nothing while the detail request is in flight.
        if self.data is None:
            row = next((j for j in snapshot.jobs if j["id"] == self.key), None)
            if row is not None:
                self.show_detail(row, now)
        self.mark_stale(self.query_one("#job-body"), snapshot)

    def show_detail(self, data: dict[str, Any], now: float) -> None:
        snapshot = self.qtui.snapshot
        self.query_one("#job-fields", Section).update(job_fields(data, now))
        history = [{**a, "n": i + 1} for i, a in enumerate(data.get("assignments") or [])]
        self.query_one("#history", LiveTable).show(history)
        self.query_one("#history-caption", Static).update(
            self.caption(snapshot, f"Assignments ({len(history)})"))
        error = self.query_one("#job-error", Section)
        error.display = bool(data.get("last_error"))
        error.update(Text(data.get("last_error") or ""))
        self.query_one("#job-payload", Section).update(Text(pretty(data.get("payload"))))
        result = self.query_one("#job-result", Section)
        result.display = data.get("result") is not None
        result.update(Text(pretty(data.get("result"))))

    def action_act(self, what: str) -> None:
        self.request(job_actions(self.key)[what])
