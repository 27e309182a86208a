"""`qctl enqueue` and `qctl job`: submit, inspect, list, cancel and retry jobs."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from qctl import options, output
from qctl.errors import FAILED, CliError
from qshared.client import job_body

BATCH_SIZE = 1000

JOB_FIELDS = (
    "id", "task", "queue", "status", "priority", "attempts", "max_attempts", "worker_id",
    "payload", "result", "last_error", "unique_key", "lock_key", "timeout_s", "run_at",
    "created_at", "started_at", "finished_at",
)
JOB_COLUMNS: list[output.Column] = [
    ("ID", "id"), ("QUEUE", "queue"), ("TASK", "task"), ("STATUS", "status"),
    ("PRIO", "priority"), ("ATTEMPTS", lambda j: f"{j.get('attempts')}/{j.get('max_attempts')}"),
    ("WORKER", "worker_id"), ("CREATED", "created_at"), ("LAST ERROR", "last_error"),
]
ASSIGNMENT_COLUMNS: list[output.Column] = [
    ("WORKER", "worker_id"), ("TOKEN", "token"), ("ASSIGNED", "assigned_at"),
    ("STARTED", "started_at"), ("FINISHED", "finished_at"), ("OUTCOME", "outcome"),
]


def _payload(value: str | None) -> Any:
    """JSON text, `@file.json`, or `-` for stdin."""
    if value is None:
        return None
    source = "--payload"
    try:
        if value == "-":
            value, source = sys.stdin.read(), "stdin"
        elif value.startswith("@"):
            source = value[1:]
            value = Path(source).read_text()
        return json.loads(value)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}",
                                 param_hint="--payload") from None
    except ValueError as exc:
        raise click.BadParameter(f"{source} is not valid JSON: {exc}",
                                 param_hint="--payload") from None


@click.command("enqueue", short_help="Submit job(s) and print the id(s).")
@click.argument("task")
@click.option("--payload", metavar="JSON", help="Job payload: JSON, @file.json, or - (stdin).")
@click.option("--queue", "-q", metavar="Q", help="Queue (default: the scheduler's QUEUE_DEFAULT).")
@click.option("--priority", type=click.IntRange(-1000, 1000), default=0, show_default=True,
              help="Higher runs first.")
@click.option("--delay", type=click.FloatRange(min=0), metavar="S", help="Seconds to wait.")
@click.option("--max-attempts", type=click.IntRange(min=1), metavar="N",
              help="Attempts before the job is dead.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Per-attempt time limit in seconds.")
@click.option("--unique-key", metavar="K", help="Dedupe key: a second enqueue returns the same id.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help=f"Submit N copies (in batches of {BATCH_SIZE}).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job(s) finish; exit 1 unless "
              "all succeeded.")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="S", help="How long --wait waits.")
@options.remote_command
@click.pass_context
def enqueue(
    ctx: click.Context, task: str, payload: str | None, queue: str | None, priority: int,
    delay: float | None, max_attempts: int | None, timeout: float | None,
    unique_key: str | None, count: int, wait_: bool, wait_timeout: float,
) -> None:
    """Submit a job running TASK; prints its id (one id per line with --count)."""
    if unique_key and count > 1:
        raise click.UsageError("--unique-key cannot be combined with --count > 1")
    client = options.scheduler(ctx)
    fmt = options.output_format(ctx)
    body = dict(queue=queue, priority=priority, delay_s=delay, max_attempts=max_attempts,
                timeout_s=timeout, unique_key=unique_key)
    value = _payload(payload)
    if count == 1:
        ids = [client.enqueue(task, value, **body)]
    else:
        ids = []
        for start in range(0, count, BATCH_SIZE):
            n = min(BATCH_SIZE, count - start)
            ids += client.enqueue_many([job_body(task, value, **body)] * n)
    if not wait_:
        if fmt == "json":
            output.print_json({"ids": ids})
        else:
            click.echo("\n".join(str(i) for i in ids))
        return
    jobs = [_wait(client, job_id, wait_timeout) for job_id in ids]
    if fmt == "json":
        output.print_json({"ids": ids, "jobs": jobs})
    elif len(jobs) == 1:
        output.fields({k: v for k, v in jobs[0].items() if k != "assignments"}, JOB_FIELDS)
    else:
        counts = Counter(j["status"] for j in jobs)
        click.echo("\n".join(str(i) for i in ids))
        output.table([{"status": k, "jobs": v} for k, v in sorted(counts.items())],
                     [("STATUS", "status"), ("JOBS", "jobs")])
    failed = [j for j in jobs if j["status"] != "succeeded"]
    if failed:
        raise CliError(f"{len(failed)} of {len(jobs)} job(s) did not succeed "
                       f"(first: job {failed[0]['id']} {failed[0]['status']})", FAILED)


def _wait(client: Any, job_id: int, timeout: float) -> dict[str, Any]:
    try:
        return client.wait(job_id, timeout=timeout)
    except TimeoutError as exc:
        raise CliError(str(exc), FAILED) from None


@click.group("job")
def job_group() -> None:
    """Inspect, list, cancel and retry jobs."""


@job_group.command("show")
@click.argument("job_id", type=int)
@options.remote_command
@click.pass_context
def show_job(ctx: click.Context, job_id: int) -> None:
    """Show a job's fields and its assignment history."""
    job = options.scheduler(ctx).get_job(job_id)
    if options.output_format(ctx) == "json":
        output.print_json(job)
        return
    assignments = job.get("assignments") or []
    output.fields({k: v for k, v in job.items() if k != "assignments"}, JOB_FIELDS,
                  title=f"job {job_id}")
    click.echo()
    output.table(assignments, ASSIGNMENT_COLUMNS, title="assignments",
                 empty="no assignments yet")


@job_group.command("cancel")
@click.argument("job_id", type=int)
@options.remote_command
@click.pass_context
def cancel_job(ctx: click.Context, job_id: int) -> None:
    """Cancel a job that has not started (pending or assigned)."""
    job = options.scheduler(ctx).cancel(job_id)
    if options.output_format(ctx) == "json":
        output.print_json(job)
    else:
        output.success(f"job {job_id} {job.get('status', 'cancelled') if job else 'cancelled'}")


@job_group.command("list")
@click.option("--queue", "-q", metavar="Q", help="Only this queue.")
@click.option("--status", "-s", metavar="STATE",
              type=click.Choice(["pending", "assigned", "running", "succeeded", "dead",
                                 "cancelled"]),
              help="Only jobs in this state.")
@click.option("--task", "-t", metavar="TASK", help="Only this task.")
@click.option("--limit", "-n", type=click.IntRange(1, 10000), default=50, show_default=True)
@options.remote_command
@click.pass_context
def list_jobs(
    ctx: click.Context, queue: str | None, status: str | None, task: str | None, limit: int
) -> None:
    """List jobs, newest first."""
    jobs = options.scheduler(ctx).list_jobs(queue=queue, status=status, task=task, limit=limit)
    output.emit(options.output_format(ctx), {"jobs": jobs}, jobs, JOB_COLUMNS,
                empty="no jobs match")


@job_group.command("retry")
@click.argument("job_id", type=int)
@options.remote_command
@click.pass_context
def retry_job(ctx: click.Context, job_id: int) -> None:
    """Run a dead or cancelled job again, due now (with one more attempt when its attempts
    were used up)."""
    job = options.scheduler(ctx).retry(job_id)
    if options.output_format(ctx) == "json":
        output.print_json(job)
    else:
        output.success(f"job {job_id} {job.get('status')} again: attempt {job['attempts'] + 1}"
                       f" of {job['max_attempts']}")


def _bulk_command(name: str, action: str, states: tuple[str, ...], done: str,
                  doc: str) -> click.Command:
    @click.option("--id", "ids", type=click.IntRange(min=1), multiple=True, metavar="ID",
                  help="Only this job (repeat for more).")
    @click.option("--queue", "-q", metavar="Q", help="Only this queue.")
    @click.option("--status", "-s", type=click.Choice(states), help="Only jobs in this state.")
    @click.option("--task", "-t", metavar="TASK", help="Only this task.")
    @click.option("--limit", "-n", type=click.IntRange(1, 10000), default=1000,
                  show_default=True, help="The most jobs changed (oldest first).")
    @options.remote_command
    @click.pass_context
    def command(ctx: click.Context, ids: tuple[int, ...], queue: str | None,
                status: str | None, task: str | None, limit: int) -> None:
        if not (ids or queue or status or task):
            raise click.UsageError("name the jobs: give --id, --queue, --status or --task")
        body: dict[str, Any] = {"limit": limit}
        for key, value in (("ids", list(ids) or None), ("queue", queue), ("status", status),
                           ("task", task)):
            if value is not None:
                body[key] = value
        result = options.scheduler(ctx).request("POST", f"/admin/queue/jobs/{action}", body)
        if options.output_format(ctx) == "json":
            output.print_json(result)
        else:
            output.success(f"{done} {result['count']} job(s)")

    command.__doc__ = doc
    return job_group.command(name)(command)


_bulk_command("retry-all", "retry", ("dead", "cancelled"), "retried",
              "Run the matching dead or cancelled jobs again (at least one filter); prints how "
              "many.")
_bulk_command("cancel-all", "cancel", ("pending", "assigned"), "cancelled",
              "Cancel the matching pending or assigned jobs (at least one filter); prints how "
              "many.")
