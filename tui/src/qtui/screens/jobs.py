"""Jobs: search by id, queue, state, task; retry and cancel one, or every job found."""

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
from qtui.widgets.tables import Col, FilterBar, LiveTable

JOB_STYLE = {"pending": "", "assigned": "cyan", "running": "bold cyan", "succeeded": "green",
             "dead": "bold red", "cancelled": "dim"}
BULK_LIMIT = 1000


def job_status(job: dict[str, Any]) -> Text:
    status = job["status"]
    text = Text(status, style=JOB_STYLE.get(status, ""))
    if status == "pending" and job.get("last_error"):
        text = Text("retrying", style="yellow")
    return text


def job_actions(job_id: int) -> dict[str, Action]:
    return {
        "retry": Action("retry_job", (job_id,), label=f"retry job {job_id}"),
        "cancel": Action("cancel_job", (job_id,), label=f"cancel job {job_id}",
                         confirm=f"Cancel job {job_id}? It will not run."),
    }


def _ran_on(job: dict[str, Any]) -> str:
    return job.get("worker_id") or "-"


class JobsScreen(DashboardScreen):
    """The jobs the current search finds (newest first), live."""

    TITLE = "Jobs"
    source = "scheduler"
    filterable = True

    BINDINGS = [
        Binding("slash", "open_filter", "Search"),
        Binding("enter", "detail", "Detail", show=False),
        Binding("r", "act('retry')", "Retry"),
        Binding("c", "act('cancel')", "Cancel"),
        Binding("R", "bulk('retry')", "Retry all"),
        Binding("C", "bulk('cancel')", "Cancel all"),
    ]

    def compose_body(self) -> ComposeResult:
        now = self.qtui.clock
        columns = [
            Col("id", "id", lambda j: str(j["id"]), sort=lambda j: -j["id"], right=True),
            Col("queue", "queue", lambda j: j["queue"]),
            Col("task", "task", lambda j: j["task"]),
            Col("status", "status", job_status),
            Col("tries", "tries", lambda j: f"{j['attempts']}/{j['max_attempts']}",
                sort=lambda j: j["attempts"], right=True),
            Col("worker", "worker", _ran_on),
            Col("age", "age", lambda j: fmt.age(j.get("created_at"), now()),
                sort=lambda j: -(fmt.epoch(j.get("created_at")) or 0), right=True),
            Col("error", "last error", lambda j: fmt.error_summary(j.get("last_error"), 50)),
        ]
        yield Static(id="caption", classes="caption")
        yield LiveTable(columns, item_key=lambda j: j["id"], id="jobs")

    def filter_hint(self) -> str:
        return "search: 42 | queue:emails status:dead task:send … (enter searches, escape clears)"

    def show(self, snapshot: Snapshot, now: float) -> None:
        table = self.query_one(LiveTable)
        query = self.qtui.job_query
        searching = snapshot.job_query != query
        table.show([] if searching else snapshot.jobs)
        what = str(query) or "all queues, newest first"
        found = "searching…" if searching else f"{len(snapshot.jobs)} shown"
        self.query_one("#caption", Static).update(self.caption(snapshot, f"Jobs: {what}, {found}"))
        self.mark_stale(table, snapshot)

    # The search runs on the server, on enter: typing does not filter.
    def filter_changed(self, text: str) -> None:
        pass

    def filter_submitted(self, text: str) -> None:
        self.post_message(JobQueryChanged(JobQuery.parse(text)))

    def action_open_filter(self) -> None:
        bar = self.query_one(FilterBar)
        if not bar.display:
            bar.value = str(self.qtui.job_query)
        super().action_open_filter()

    def action_detail(self) -> None:
        job = self.query_one(LiveTable).selected
        if job is not None:
            self.open_detail(job)

    def on_live_table_selected(self, event: LiveTable.Selected) -> None:
        self.open_detail(event.item)

    def open_detail(self, job: dict[str, Any]) -> None:
        from qtui.screens.job_detail import JobDetailScreen

        self.app.push_screen(JobDetailScreen(job["id"]))

    def action_act(self, what: str) -> None:
        job = self.query_one(LiveTable).selected
        if job is not None:
            self.request(job_actions(job["id"])[what])

    def action_bulk(self, what: str) -> None:
        query = self.qtui.job_query
        selector = query.selector
        if not selector:
            self.notify("Search first (/): bulk actions act on the jobs a search finds.",
                        severity="warning")
            return
        listed = len(self.query_one(LiveTable).items)
        states = "dead or cancelled" if what == "retry" else "pending or assigned"
        self.request(Action(
            f"bulk_{what}", kwargs={**selector, "limit": BULK_LIMIT},
            label=f"{what} jobs matching {query}",
            confirm=(f"{what.capitalize()} every {states} job matching '{query}' "
                     f"(up to {BULK_LIMIT:,})? {listed} listed now."),
        ))
