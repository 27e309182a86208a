"""`qctl queue` (list, stats, pause, resume, locks, clean-ups, retention) and `qctl health`:
queue depths and controls, locks, the retention clean-ups and service health."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
import httpx

from qctl import options, output
from qctl.errors import FAILED, UNREACHABLE, CliError
from qshared.storage.base import MAX_RETENTION_DAYS

STATS_COLUMNS: list[output.Column] = [
    ("QUEUE", "queue"), ("PENDING", "pending"), ("SCHEDULED", "scheduled"),
    ("ASSIGNED", "assigned"), ("RUNNING", "running"), ("SUCCEEDED", "succeeded"),
    ("RETRYING", "failed"), ("DEAD", "dead"), ("CANCELLED", "cancelled"),
    ("OLDEST PENDING", lambda q: output.age(q.get("oldest_pending_age_s"))),
]

QUEUE_COLUMNS: list[output.Column] = [
    ("QUEUE", "queue"), ("STATE", lambda q: "paused" if q.get("paused") else "running"),
    *STATS_COLUMNS[1:],
]

LOCK_COLUMNS: list[output.Column] = [
    ("KEY", lambda lock: lock.get("key") or lock.get("lock_key")), ("OWNER", "owner"),
    ("WORKER", "worker_id"), ("TOKEN", "token"),
    ("EXPIRES IN", lambda lock: _expires_in(lock.get("expires_in_s"))), ("LIVE", "live"),
]


def _expires_in(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return output.age(seconds) if seconds >= 0 else f"expired {output.age(-seconds)} ago"


@click.group("queue", short_help="Queues (list, stats, pause, resume), locks, clean-ups.")
def queue_group() -> None:
    """Queues and locks as the scheduler sees them (`qctl queue stats`, also `queue:stats`)."""


@queue_group.command("list")
@options.remote_command
@click.pass_context
def list_queues(ctx: click.Context) -> None:
    """Every queue with jobs or a pause: running or paused, and its jobs per state."""
    queues = options.scheduler(ctx).request("GET", "/api/v1/queues")["queues"]
    output.emit(options.output_format(ctx), {"queues": queues}, queues, QUEUE_COLUMNS,
                empty="no queues yet")


def _set_paused(ctx: click.Context, queue: str, action: str, done: str) -> None:
    result = options.scheduler(ctx).request(
        "POST", f"/api/v1/queues/{quote(queue, safe='')}/{action}")
    if options.output_format(ctx) == "json":
        output.print_json(result)
    else:
        output.success(f"queue {result.get('queue', queue)} {done}")


@queue_group.command("pause")
@click.argument("queue")
@options.remote_command
@click.pass_context
def pause_queue(ctx: click.Context, queue: str) -> None:
    """Stop dispatching QUEUE's jobs: they wait as pending; enqueue goes on and jobs already
    assigned or running finish."""
    _set_paused(ctx, queue, "pause", "paused (its jobs wait until `qctl queue resume`)")


@queue_group.command("resume")
@click.argument("queue")
@options.remote_command
@click.pass_context
def resume_queue(ctx: click.Context, queue: str) -> None:
    """Dispatch a paused QUEUE's jobs again, from now."""
    _set_paused(ctx, queue, "resume", "resumed")


@queue_group.command("stats")
@options.remote_command
@click.pass_context
def queue_stats(ctx: click.Context) -> None:
    """Jobs per queue and state, and the age of the oldest pending job (/admin/queue/stats)."""
    queues = options.scheduler(ctx).stats()
    output.emit(options.output_format(ctx), {"queues": queues}, queues, STATS_COLUMNS,
                empty="no jobs in any queue yet")


@queue_group.command("list-locks")
@options.remote_command
@click.pass_context
def list_locks(ctx: click.Context) -> None:
    """Every distributed lock, live or expired: key, owner, fencing token, time left."""
    locks = options.scheduler(ctx).request("GET", "/admin/queue/locks")["locks"]
    output.emit(options.output_format(ctx), {"locks": locks}, locks, LOCK_COLUMNS,
                empty="no locks held")


@queue_group.command("clear-stale-locks")
@options.remote_command
@click.pass_context
def clear_stale_locks(ctx: click.Context) -> None:
    """Delete the lock rows whose lease has expired; live locks stay."""
    result = options.scheduler(ctx).request("POST", "/admin/queue/locks/clear-stale")
    if options.output_format(ctx) == "json":
        output.print_json(result)
        return
    keys = result.get("keys") or []
    output.success(f"cleared {result.get('cleared', len(keys))} stale lock(s)")
    if keys:
        click.echo("\n".join(keys))


# -- retention: the failover watcher's clean-ups ------------------------------------------
CLEANUP_PATH = "/admin/queue/failover/cleanup/"
RETENTION_PATH = "/admin/queue/failover/retention"
CLEANUP_TIMEOUT = 600.0  # a first clean-up of a large backlog deletes batch after batch
FINISHED = ("succeeded", "cancelled", "dead")


def _days(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return "keep forever" if value == 0 else f"{value:g} days"


CLEANUP_COLUMNS: list[output.Column] = [
    ("TABLE", "table"), ("DELETED", "deleted"),
    ("OLDER THAN", lambda r: f"{r['older_than_days']:g} days"),
]
ORPHAN_COLUMNS: list[output.Column] = [
    ("TABLE", "table"), ("DELETED (JOB GONE)", "deleted"), ("CLOSED (JOB MOVED ON)", "closed"),
]
JOB_CLEANUP_COLUMNS: list[output.Column] = [
    ("TABLE", "table"), ("STATUSES", "statuses"), *CLEANUP_COLUMNS[1:],
]

class Days(click.ParamType):
    """A number of days from 0 to MAX_RETENTION_DAYS, fractions allowed."""

    name = "days"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            days = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of days", param, ctx)
        if not 0 <= days <= MAX_RETENTION_DAYS:  # NaN fails too
            self.fail(f"{value} is not between 0 and {MAX_RETENTION_DAYS:g} days", param, ctx)
        return days


days_option = click.option(
    "--days", type=Days(), required=True, metavar="N",
    help="Delete rows older than N days (fractions allowed; 0: every row up to now).",
)


def _cleanup(ctx: click.Context, what: str, body: dict[str, Any],
             columns: list[output.Column]) -> None:
    client = options.failover(ctx, timeout=CLEANUP_TIMEOUT)
    result = client.request("POST", CLEANUP_PATH + what, body)
    output.emit(options.output_format(ctx), result, [result], columns)


@queue_group.command("cleanup-health-checks")
@days_option
@options.remote_command
@click.pass_context
def cleanup_health_checks(ctx: click.Context, days: float) -> None:
    """Delete worker health checks older than N days (the specification runs --days=30)."""
    _cleanup(ctx, "health-checks", {"days": days}, CLEANUP_COLUMNS)


@queue_group.command("cleanup-failover-events")
@days_option
@options.remote_command
@click.pass_context
def cleanup_failover_events(ctx: click.Context, days: float) -> None:
    """Delete failover events older than N days (the specification runs --days=90)."""
    _cleanup(ctx, "failover-events", {"days": days}, CLEANUP_COLUMNS)


@queue_group.command("cleanup-orphaned-assignments")
@options.remote_command
@click.pass_context
def cleanup_orphaned_assignments(ctx: click.Context) -> None:
    """Delete job assignment rows whose job is gone, and close the open ones whose job has
    moved on (finished, requeued or assigned again); a live assignment stays."""
    _cleanup(ctx, "orphaned-assignments", {}, ORPHAN_COLUMNS)


@queue_group.command("cleanup-jobs")
@days_option
@click.option("--status", "statuses", type=click.Choice(FINISHED), multiple=True,
              help="A finished state whose jobs go; repeat it for more (default: succeeded "
                   "and cancelled).")
@options.remote_command
@click.pass_context
def cleanup_jobs(ctx: click.Context, days: float, statuses: tuple[str, ...]) -> None:
    """Delete finished jobs that finished more than N days ago, with their assignment rows.
    Pending, assigned and running jobs are never deleted."""
    body: dict[str, Any] = {"days": days}
    if statuses:
        body["statuses"] = list(statuses)
    _cleanup(ctx, "jobs", body, JOB_CLEANUP_COLUMNS)


def _show_run(run: dict[str, Any], title: str) -> None:
    output.fields({
        "trigger": run.get("trigger"), "started at": run.get("started_at"),
        "took": output.age(run.get("duration_s")),
        "open assignments closed": run.get("closed_assignments"),
        "skipped (kept forever)": ", ".join(run.get("skipped") or []) or "none",
        "error": run.get("error"),
    }, title=title)
    rows = [{"table": t, "deleted": n} for t, n in (run.get("deleted") or {}).items()]
    output.table(rows, [("TABLE", "table"), ("DELETED", "deleted")])


@queue_group.command("retention")
@click.option("--run", "run_now", is_flag=True,
              help="Run every clean-up of the policy now and show what it deleted.")
@options.remote_command
@click.pass_context
def retention(ctx: click.Context, run_now: bool) -> None:
    """The retention policy the failover leader applies each QSTACK_RETENTION_INTERVAL, and
    the last run of the replica that answers; --run runs it now."""
    client = options.failover(ctx, timeout=CLEANUP_TIMEOUT)
    if run_now:
        run = client.request("POST", RETENTION_PATH + "/run")
        if options.output_format(ctx) == "json":
            output.print_json(run)
        else:
            _show_run(run, "retention run")
        return
    state = client.request("GET", RETENTION_PATH)
    if options.output_format(ctx) == "json":
        output.print_json(state)
        return
    policy = state["policy"]
    interval = policy["interval_s"]
    output.fields({
        "schedule": f"every {output.age(interval)}" if interval else "off",
        "this replica runs it": state.get("scheduled"),
        "next run in": output.age(state.get("next_run_in_s")),
        "worker_health_checks": _days(policy["health_checks_days"]),
        "failover_events": _days(policy["failover_events_days"]),
        "jobs (succeeded, cancelled)": _days(policy["jobs_days"]),
        "jobs (dead)": _days(policy["dead_jobs_days"]),
    }, title="retention policy")
    if state.get("last_run"):
        _show_run(state["last_run"], "last run")
    else:
        output.show("no retention run on this replica yet")


def _probe(name: str, url: str) -> dict[str, Any]:
    row: dict[str, Any] = {"service": name, "url": url}
    try:
        resp = httpx.get(f"{url}/health", timeout=5.0)
    except httpx.HTTPError as exc:
        return {**row, "status": "unreachable", "detail": str(exc) or type(exc).__name__}
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text[:200]
    status = "ok" if resp.status_code == 200 else "unhealthy"
    if isinstance(body, dict) and isinstance(body.get("status"), str):
        status = body["status"] if resp.status_code == 200 else status
    return {**row, "status": status, "http_status": resp.status_code, "detail": body}


@click.command("health", short_help="Check the registry's and scheduler's /health.")
@options.remote_command
@click.pass_context
def health(ctx: click.Context) -> None:
    """Check the registry's and the scheduler's /health (exit 1 unhealthy, 3 unreachable)."""
    t = options.target(ctx)
    rows = [_probe("registry", t.registry_url), _probe("scheduler", t.scheduler_url)]
    output.emit(options.output_format(ctx), {"services": rows}, rows,
                [("SERVICE", "service"), ("URL", "url"), ("STATUS", "status"),
                 ("DETAIL", "detail")])
    down = [r for r in rows if r["status"] == "unreachable"]
    if down:
        raise CliError(", ".join(f"{r['service']} unreachable at {r['url']}" for r in down),
                       UNREACHABLE)
    bad = [r for r in rows if r.get("http_status") != 200]
    if bad:
        raise CliError(", ".join(f"{r['service']} unhealthy" for r in bad), FAILED)
