"""`qctl queue` (stats, locks) and `qctl health`: queue depths, locks and service health."""

from __future__ import annotations

from typing import Any

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


LOCK_COLUMNS: list[output.Column] = [
    ("KEY", lambda lock: lock.get("key") or lock.get("lock_key")), ("OWNER", "owner"),
    ("WORKER", "worker_id"), ("TOKEN", "token"),
    ("EXPIRES IN", lambda lock: _expires_in(lock.get("expires_in_s"))), ("LIVE", "live"),
]


def _expires_in(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return output.age(seconds) if seconds >= 0 else f"expired {output.age(-seconds)} ago"


@click.group("queue", short_help="Queue statistics and locks (`queue stats`, `list-locks`).")
def queue_group() -> None:
    """Queues and locks as the scheduler sees them (`qctl queue stats`, also `queue:stats`)."""


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
