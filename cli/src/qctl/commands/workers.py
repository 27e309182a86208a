"""`qctl worker`: list, inspect, drain, stop, deregister and recover workers; run one locally."""

from __future__ import annotations

import os
import sys

import click

from qctl import options, output
from qctl.commands.failover import CLEANUP_CRASHED_PATH, RECOVER_PATH, run_pass
from qctl.errors import FAILED, CliError

WORKER_COLUMNS: list[output.Column] = [
    ("ID", "id"), ("HOST", "hostname"), ("QUEUES", "queues"), ("CONC", "concurrency"),
    ("STATUS", lambda w: w.get("status") if not w.get("requested")
     else f"{w.get('status')} ({w['requested']} requested)"),
    ("IN-FLIGHT", "in_flight"), ("HEARTBEAT", lambda w: output.age(w.get("heartbeat_age_s"))),
    ("HEALTH", "health"), ("CPU%", "cpu_percent"),
    ("MEM", lambda w: output.size(w.get("memory_bytes"))),
]
STATS_COLUMNS: list[output.Column] = [
    ("WORKER", "worker_id"), ("ASSIGNED", "assigned"), ("SUCCEEDED", "succeeded"),
    ("FAILED", "failed"), ("DEAD", "dead"), ("IN-FLIGHT", "in_flight"),
    ("AVG RUN", lambda r: output.age(r.get("avg_run_s"))),
]
CHECK_COLUMNS: list[output.Column] = [
    ("CHECKED", "checked_at"), ("STATUS", "status"), ("CPU%", "cpu_percent"),
    ("MEM", lambda c: output.size(c.get("memory_bytes"))), ("IN-FLIGHT", "in_flight"),
    ("LAG", lambda c: output.age((c.get("loop_lag_ms") or 0) / 1000)),
    ("REASONS", lambda c: (c.get("details") or {}).get("reasons")),
]
WORKER_FIELDS = (
    "id", "hostname", "pid", "queues", "concurrency", "prefetch", "status", "requested",
    "health", "in_flight", "heartbeat_age_s", "cpu_percent", "memory_bytes", "loop_lag_ms",
    "version", "admin_url", "started_at", "last_heartbeat_at",
)


@click.group("worker", short_help="List, inspect, drain, stop and recover workers.")
def worker_group() -> None:
    """Workers as the registry sees them (`qctl worker list`, also `worker:list`)."""


@worker_group.command("list")
@click.option("--status", "-s", type=click.Choice(["active", "draining", "stopped", "failed"]),
              help="Only workers in this state.")
@options.remote_command
@click.pass_context
def list_workers(ctx: click.Context, status: str | None) -> None:
    """List registered workers with their state, load, heartbeat age and health."""
    workers = options.registry(ctx).request("GET", "/api/v1/workers")["workers"]
    if status:
        workers = [w for w in workers if w.get("status") == status]
    output.emit(options.output_format(ctx), {"workers": workers}, workers, WORKER_COLUMNS,
                empty="no workers registered")


@worker_group.command("stats")
@options.remote_command
@click.pass_context
def worker_stats(ctx: click.Context) -> None:
    """Jobs assigned, succeeded, failed and dead per worker, and their average run time."""
    rows = options.registry(ctx).request("GET", "/api/v1/workers/stats")["workers"]
    output.emit(options.output_format(ctx), {"workers": rows}, rows, STATS_COLUMNS,
                empty="no assignments yet")


@worker_group.command("show")
@click.argument("worker_id")
@options.remote_command
@click.pass_context
def show_worker(ctx: click.Context, worker_id: str) -> None:
    """Show one worker's registration, state and latest health check."""
    worker = options.registry(ctx).request("GET", f"/api/v1/workers/{worker_id}")
    if options.output_format(ctx) == "json":
        output.print_json(worker)
        return
    checks = worker.pop("health_checks", None)
    output.fields(worker, WORKER_FIELDS, title=f"worker {worker_id}")
    if isinstance(checks, list):
        click.echo()
        output.table(checks, CHECK_COLUMNS, title="recent health checks", empty="none yet")


def _worker_ids(worker_id: str | None, worker_id_opt: str | None) -> str:
    chosen = worker_id or worker_id_opt
    if not chosen:
        raise click.UsageError("name the worker: WORKER_ID or --worker-id")
    if worker_id and worker_id_opt and worker_id != worker_id_opt:
        raise click.UsageError("WORKER_ID and --worker-id disagree")
    return chosen


def _action(ctx: click.Context, worker_id: str, method: str, path: str, done: str) -> None:
    result = options.registry(ctx).request(method, f"/api/v1/workers/{worker_id}{path}")
    if options.output_format(ctx) == "json":
        output.print_json(result)
    else:
        output.success(f"worker {worker_id}: {done}")


def _worker_command(name: str, method: str, path: str, done: str, doc: str) -> click.Command:
    @click.argument("worker_id", required=False)
    @click.option("--worker-id", "worker_id_opt", metavar="ID",
                  help="The worker (the specification's spelling).")
    @click.option("--graceful", is_flag=True, hidden=True,
                  help="Accepted for the specification; stopping is always graceful.")
    @options.remote_command
    @click.pass_context
    def command(ctx: click.Context, worker_id: str | None, worker_id_opt: str | None,
                graceful: bool) -> None:
        _action(ctx, _worker_ids(worker_id, worker_id_opt), method, path, done)

    command.__doc__ = doc
    return worker_group.command(name)(command)


_worker_command("drain", "POST", "/drain", "draining (takes no new jobs, finishes its own)",
                "Stop giving the worker new jobs; it finishes what it has.")
_worker_command("stop", "POST", "/stop", "stop requested (it finishes in-flight jobs, then exits)",
                "Ask the worker to stop gracefully (in-flight jobs finish first).")
_worker_command("deregister", "DELETE", "", "deregistered",
                "Remove the worker's registration (its unfinished jobs go back to pending).")


@worker_group.command("stop-all")
@click.option("--graceful", is_flag=True, hidden=True,
              help="Accepted for the specification; stopping is always graceful.")
@options.remote_command
@click.pass_context
def stop_all(ctx: click.Context, graceful: bool) -> None:
    """Ask every active or draining worker to stop gracefully."""
    client = options.registry(ctx)
    workers = client.request("GET", "/api/v1/workers")["workers"]
    targets = [w["id"] for w in workers if w.get("status") in ("active", "draining")]
    for worker_id in targets:
        client.request("POST", f"/api/v1/workers/{worker_id}/stop")
    if options.output_format(ctx) == "json":
        output.print_json({"stopped": targets})
    else:
        output.success(f"stop requested for {len(targets)} worker(s)")


@worker_group.command("failover-recovery")
@click.option("--force", is_flag=True,
              help="Skip the guards (database settle time, registry health, mass death): "
                   "declare dead every worker past the TTL or without its session lock.")
@options.remote_command
@click.pass_context
def failover_recovery(ctx: click.Context, force: bool) -> None:
    """Run a failover pass now: declare dead workers failed and put their jobs back.

    The pass also takes back jobs running past their timeout and removes long-expired
    locks. Without --force the watcher's guards apply and may hold workers back.
    """
    run_pass(ctx, RECOVER_PATH, {"force": force},
             "failover pass" + (" (forced: guards skipped)" if force else ""))


@worker_group.command("cleanup-crashed")
@options.remote_command
@click.pass_context
def cleanup_crashed(ctx: click.Context) -> None:
    """Declare crashed workers failed and take jobs back from stopped or failed workers."""
    run_pass(ctx, CLEANUP_CRASHED_PATH, None, "crashed-worker clean-up")


def _exec_qworker(args: list[str]) -> None:
    from qctl.stack import command_for

    argv = command_for("qworker")
    if argv[0] == sys.executable:
        import importlib.util

        if importlib.util.find_spec("qworker") is None:
            raise CliError("qworker is not installed in this environment", FAILED)
    os.execv(argv[0], [*argv, *args])


_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True,
                "help_option_names": []}


@worker_group.command("start", context_settings=_PASSTHROUGH)
@click.pass_context
def start_worker(ctx: click.Context) -> None:
    """Run a worker in this terminal: the same as `qworker start ARGS...`."""
    _exec_qworker(["start", *ctx.args])


@worker_group.command("health", context_settings=_PASSTHROUGH)
@click.pass_context
def worker_health(ctx: click.Context) -> None:
    """Check the local worker's /health: the same as `qworker health ARGS...` (exit 0/1)."""
    _exec_qworker(["health", *ctx.args])
