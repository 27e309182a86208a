"""`qctl failover events` and the rendering of a failover pass (the watcher, qfailover)."""

from __future__ import annotations

from typing import Any

import click

from qctl import options, output

RECOVER_PATH = "/admin/queue/failover/recover"
CLEANUP_CRASHED_PATH = "/admin/queue/failover/cleanup-crashed"

EVENT_COLUMNS: list[output.Column] = [
    ("ID", "id"), ("AT", "failover_at"), ("TYPE", "event_type"), ("WORKER", "failed_worker_id"),
    ("RECOVERED", "jobs_recovered"), ("DEAD", "jobs_dead"),
    ("DETECTED AFTER", lambda e: _ms(e.get("detection_ms"))),
    ("RECOVERY", lambda e: _ms(e.get("recovery_ms"))),
    ("REASON", lambda e: _reason(e.get("details"))),
]
# The order a pass's report is shown in, each with its label.
REPORT_FIELDS = (
    ("declared_dead", "declared dead"), ("jobs_recovered", "jobs back to pending"),
    ("jobs_dead", "jobs dead"), ("quarantined", "jobs quarantined"),
    ("timed_out", "timed-out jobs taken back"), ("orphans", "orphans taken back from"),
    ("stale_locks", "stale locks removed"), ("held_back", "held back"), ("note", "note"),
)


def _ms(value: Any) -> str:
    return output.age(value / 1000) if isinstance(value, int | float) else "-"


def _reason(details: Any) -> Any:
    if not isinstance(details, dict):
        return details
    return details.get("reason") or details.get("note") or details or None


def run_pass(ctx: click.Context, path: str, body: dict[str, Any] | None, title: str) -> None:
    """POST one failover pass to the watcher and print its report (JSON: the reply as is)."""
    report = options.failover(ctx).request("POST", path, body)
    if options.output_format(ctx) == "json":
        output.print_json(report)
        return
    shown = {}
    for key, label in REPORT_FIELDS:
        value = report.get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "none"
        shown[label] = "-" if value is None else value
    output.fields(shown, title=title)
    if report.get("held_back"):
        output.warn("held back: " + ", ".join(report["held_back"]) + " (a guard held them: "
                    "`qctl worker failover-recovery --force` declares them dead anyway)")


@click.group("failover", short_help="Failover events (`failover events`).")
def failover_group() -> None:
    """The failover watcher's history (`qctl failover events`, also `failover:events`).

    Manual passes are `qctl worker failover-recovery [--force]` and
    `qctl worker cleanup-crashed`.
    """


@failover_group.command("events")
@click.option("--worker-id", metavar="ID", help="Only events about this worker.")
@click.option("--limit", "-n", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="How many events, newest first.")
@options.remote_command
@click.pass_context
def list_events(ctx: click.Context, worker_id: str | None, limit: int) -> None:
    """Failover events, newest first: dead workers, jobs taken back, held-back passes."""
    params: dict[str, Any] = {"limit": limit}
    if worker_id:
        params["worker_id"] = worker_id
    events = options.failover(ctx).request("GET", "/admin/queue/failover", **params)["events"]
    output.emit(options.output_format(ctx), {"events": events}, events, EVENT_COLUMNS,
                empty="no failover events" + (f" for worker {worker_id}" if worker_id else ""))
