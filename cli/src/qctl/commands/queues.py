"""`qctl queue` (list, stats, pause, resume, locks) and `qctl health`: queue depths and
controls, locks and service health."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
import httpx

from qctl import options, output
from qctl.errors import FAILED, UNREACHABLE, CliError

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


@click.group("queue", short_help="Queues (list, stats, pause, resume) and locks.")
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
