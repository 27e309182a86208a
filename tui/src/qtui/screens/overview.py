"""Overview: workers by status, live throughput, queue lengths, latency, leaders, failovers, alerts."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from qtui import formatting as fmt
from qtui.screens.base import DashboardScreen, Section
from qtui.screens.failover import event_type
from qtui.screens.workers import HEALTH_STYLE, STATUS_STYLE
from qtui.snapshot import Snapshot
from qtui.widgets.charts import RateChart


def _counts(items: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        value = item.get(key)
        if value:
            out[value] = out.get(value, 0) + 1
    return out


def workers_panel(snapshot: Snapshot) -> Table:
    """Workers by status beside the live ones' health, then their slots."""
    workers = snapshot.workers
    by_status = _counts(workers, "status")
    live = [w for w in workers if w["status"] in ("active", "draining")]
    by_health = _counts(live, "health")
    grid = Table.grid(padding=(0, 1), expand=True)
    for _ in range(2):
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(width=1)
    rows = zip(("active", "draining", "stopped", "failed"), ("healthy", "degraded", "unhealthy", ""),
               strict=True)
    busy = sum(w.get("in_flight") or 0 for w in live)
    slots = sum(w["concurrency"] for w in live)
    for status, health in rows:
        n, h = by_status.get(status, 0), by_health.get(health, 0)
        right = (health, Text(str(h), style=HEALTH_STYLE[health] if h else "dim")) if health else \
            ("busy", Text(f"{busy}/{slots}"))
        grid.add_row(status, Text(str(n), style=STATUS_STYLE[status] if n else "dim"), "",
                     right[0], right[1], "")
    return grid


def activity_lines(snapshot: Snapshot) -> Text:
    """Enqueue→start latency and the two leaders, under the charts."""
    data = snapshot.throughput or {}
    text = Text(no_wrap=True, overflow="ellipsis")
    if not data:
        text.append("throughput not served by this scheduler", style="dim")
    else:
        latency = data.get("enqueue_to_start_ms") or {}
        text.append("to start  ", style="bold")
        text.append(f"p50 {fmt.millis(latency.get('p50'))}  p99 {fmt.millis(latency.get('p99'))}")
    checks = (snapshot.system or {}).get("checks") or {}
    for label, key in (("scheduler", "dispatcher_leader"), ("failover ", "failover_leader")):
        text.append(f"\n{label} ", style="bold")
        leader = checks.get(key)
        text.append(str(leader) if leader else ("no leader" if snapshot.system else "-"),
                    style="" if leader or not snapshot.system else "bold red")
    return text


def queues_table(snapshot: Snapshot, limit: int, wide: bool) -> Table:
    """The queues with the most pending first; more columns on a wide terminal."""
    table = Table(box=None, padding=(0, 1), expand=True, header_style="bold")
    columns = ["pending", "running", "retrying", "dead", "oldest", "done/s"]
    if wide:
        columns[1:1] = ["scheduled", "assigned"]
        columns[-2:-2] = ["succeeded", "cancelled"]
    table.add_column("queue", no_wrap=True, ratio=3)
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True, ratio=1)
    queues = sorted(snapshot.queues, key=lambda q: (-q["pending"], q["queue"]))
    for q in queues[:limit]:
        name = Text(q["queue"])
        if q.get("paused"):
            name.append(" (paused)", style="bold yellow")
        rate = snapshot.queue_rates.get(q["queue"])
        age = q.get("oldest_pending_age_s") or 0
        cells = {
            "pending": fmt.number(q["pending"]), "scheduled": fmt.number(q["scheduled"]),
            "assigned": fmt.number(q["assigned"]),
            "running": fmt.number(q["running"] if wide else q["running"] + q["assigned"]),
            "retrying": fmt.number(q["failed"]), "succeeded": fmt.number(q["succeeded"]),
            "cancelled": fmt.number(q["cancelled"]),
            "dead": Text(fmt.number(q["dead"]), style="bold red" if q["dead"] else ""),
            "oldest": Text(fmt.duration(age) if age else "-", style="bold red" if age >= 60 else ""),
            "done/s": "-" if rate is None else f"{rate:.1f}",
        }
        table.add_row(name, *(cells[c] for c in columns))
    if len(queues) > limit:
        table.add_row(Text(f"… {len(queues) - limit} more (3)", style="dim"))
    return table


SHORT_EVENT = {"worker_crashed": "crashed", "worker_unresponsive": "unresponsive",
               "orphans_recovered": "orphans", "held_back": "held back"}


def events_panel(snapshot: Snapshot, limit: int, now: float) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for e in snapshot.events[:limit]:
        if text:
            text.append("\n")
        text.append(f"{fmt.when(e['failover_at'], now)} ", style="dim")
        kind = event_type(e)
        text.append(SHORT_EVENT.get(kind.plain, kind.plain), style=kind.style)
        if e.get("failed_worker_id"):
            text.append(f" {e['failed_worker_id']}")
        if e.get("jobs_recovered") or e.get("jobs_dead"):
            text.append(f": {e.get('jobs_recovered', 0)} back, {e.get('jobs_dead', 0)} dead")
    return text or Text("no failover events", style="dim")


def alerts_panel(snapshot: Snapshot, configured: bool, now: float) -> Text:
    if not configured:
        return Text("no Prometheus configured (--prometheus-url)", style="dim")
    if snapshot.alerts is None:
        return Text("not fetched yet", style="dim")
    if not snapshot.alerts:
        return Text("none firing", style="green")
    text = Text(no_wrap=True, overflow="ellipsis")
    for a in snapshot.alerts:
        labels, notes = a.get("labels") or {}, a.get("annotations") or {}
        if text:
            text.append("\n")
        text.append(f"{labels.get('severity', 'alert')} ", style="bold red")
        text.append(labels.get("alertname", "?"), style="bold")
        text.append(f" {fmt.age(a.get('activeAt'), now)}", style="dim")
        summary = notes.get("summary") or notes.get("description") or ""
        if summary:
            text.append(f"\n  {summary}")
    return text


class OverviewScreen(DashboardScreen):
    """The whole system on one screen."""

    TITLE = "Overview"

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="overview-top"):
            yield Section("workers", id="workers-panel")
            with Vertical(id="throughput-panel", classes="section"):
                yield RateChart("processed", id="processed")
                yield RateChart("failed", id="failed")
                yield Label(id="activity")
        yield Section("queues", id="queues-panel")
        with Horizontal(id="overview-bottom"):
            yield Section("recent failovers", id="events-panel")
            yield Section("alerts", id="alerts-panel")

    def on_mount(self) -> None:
        self.query_one("#throughput-panel").border_title = "throughput, last 60s"
        super().on_mount()

    def show(self, snapshot: Snapshot, now: float) -> None:
        big, wide = self.size.height >= 40, self.size.width >= 120
        workers = self.query_one("#workers-panel", Section)
        workers.update(workers_panel(snapshot))
        self.mark_stale(workers, snapshot, "registry")
        self._throughput(snapshot)
        queues = self.query_one("#queues-panel", Section)
        queues.update(queues_table(snapshot, limit=15 if big else 4, wide=wide))
        self.mark_stale(queues, snapshot, "scheduler")
        events = self.query_one("#events-panel", Section)
        events.update(events_panel(snapshot, limit=12 if big else 5, now=now))
        self.mark_stale(events, snapshot, "failover")
        alerts = self.query_one("#alerts-panel", Section)
        alerts.update(alerts_panel(snapshot, "prometheus" in snapshot.services, now))
        self.mark_stale(alerts, snapshot, "prometheus")
        for panel, service in ((workers, "registry"), (queues, "scheduler"), (events, "failover")):
            panel.border_subtitle = "STALE" if snapshot.stale(service) else ""

    def _throughput(self, snapshot: Snapshot) -> None:
        data = snapshot.throughput or {}
        buckets = data.get("buckets") or []
        processed = [b["succeeded"] + b["failed"] + b["dead"] for b in buckets]
        failed = [b["failed"] + b["dead"] for b in buckets]
        self.query_one("#processed", RateChart).show(processed)
        self.query_one("#failed", RateChart).show(failed)
        self.query_one("#activity", Label).update(activity_lines(snapshot))
        panel = self.query_one("#throughput-panel")
        self.mark_stale(panel, snapshot, "scheduler")
        panel.border_subtitle = "STALE" if snapshot.stale("scheduler") else ""
