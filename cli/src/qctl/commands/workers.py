"""`qctl worker`: list, inspect, drain, stop, deregister and recover workers; run one locally."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

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


STOPPED = ("stopped", "failed")


def _wait_stopped(ctx: click.Context, worker_ids: list[str], timeout: float) -> dict[str, str]:
    """Poll the registry until every worker is stopped (or failed); their final states."""
    client = options.registry(ctx)
    deadline = time.monotonic() + timeout
    while True:
        states = {w["id"]: w["status"] for w in client.request("GET", "/api/v1/workers")["workers"]
                  if w["id"] in worker_ids}
        waiting = [i for i in worker_ids if states.get(i) not in STOPPED]
        if not waiting:
            return states
        if time.monotonic() > deadline:
            still = ", ".join(f"{i} ({states.get(i, '?')})" for i in waiting)
            raise CliError(f"still running after {timeout:g}s: {still}", FAILED)
        time.sleep(0.25)


def _action(ctx: click.Context, worker_id: str, method: str, path: str, done: str,
            wait: float | None = None) -> None:
    result = options.registry(ctx).request(method, f"/api/v1/workers/{worker_id}{path}")
    if wait is not None:
        started = time.monotonic()
        result["status"] = _wait_stopped(ctx, [worker_id], wait)[worker_id]
        done = f"{result['status']} after {time.monotonic() - started:.1f}s"
    if options.output_format(ctx) == "json":
        output.print_json(result)
    else:
        output.success(f"worker {worker_id}: {done}")


_GRACEFUL = click.option(
    "--graceful", is_flag=True,
    help="The specification's flag; stopping is always graceful (in-flight jobs finish, "
         "unstarted ones go back to pending).")
_WAIT = click.option("--wait", is_flag=True, help="Return only once the worker(s) stopped.")
_TIMEOUT = click.option(
    "--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
    metavar="SECONDS", help="How long --wait waits (exit 1 when it runs out).")


def _worker_command(name: str, method: str, path: str, done: str, doc: str,
                    can_wait: bool = False) -> click.Command:
    def command(ctx: click.Context, worker_id: str | None, worker_id_opt: str | None,
                graceful: bool = True, wait: bool = False, timeout: float = 0) -> None:
        _action(ctx, _worker_ids(worker_id, worker_id_opt), method, path, done,
                timeout if wait else None)

    command.__doc__ = doc
    if can_wait:
        command = _GRACEFUL(_WAIT(_TIMEOUT(command)))
    command = click.argument("worker_id", required=False)(
        click.option("--worker-id", "worker_id_opt", metavar="ID",
                     help="The worker (the specification's spelling).")(
            options.remote_command(click.pass_context(command))))
    return worker_group.command(name)(command)


_worker_command("drain", "POST", "/drain", "draining (takes no new jobs, finishes its own)",
                "Stop giving the worker new jobs; it finishes what it has.")
_worker_command("stop", "POST", "/stop", "stop requested (it finishes in-flight jobs, then exits)",
                "Ask the worker to stop gracefully (in-flight jobs finish first).", can_wait=True)
_worker_command("deregister", "DELETE", "", "deregistered",
                "Remove the worker's registration (its unfinished jobs go back to pending).")


@worker_group.command("stop-all")
@_GRACEFUL
@_WAIT
@_TIMEOUT
@options.remote_command
@click.pass_context
def stop_all(ctx: click.Context, graceful: bool, wait: bool, timeout: float) -> None:
    """Ask every active or draining worker to stop gracefully."""
    client = options.registry(ctx)
    workers = client.request("GET", "/api/v1/workers")["workers"]
    targets = [w["id"] for w in workers if w.get("status") in ("active", "draining")]
    for worker_id in targets:
        client.request("POST", f"/api/v1/workers/{worker_id}/stop")
    states = _wait_stopped(ctx, targets, timeout) if wait else {}
    if options.output_format(ctx) == "json":
        output.print_json({"stopped": targets, "states": states} if wait else {"stopped": targets})
    elif wait:
        output.success(f"{len(targets)} worker(s) stopped")
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


# -- the pool: doctor, resources, configuration ---------------------------------------------
@worker_group.command("validate-pool")
@click.option("--max-clock-skew", type=click.FloatRange(min=0), default=1000.0,
              show_default=True, metavar="MS",
              help="How far a worker's clock may be from the database's.")
@options.remote_command
@click.pass_context
def validate_pool(ctx: click.Context, max_clock_skew: float) -> None:
    """The pool doctor; exit 1 when it finds anything.

    Checks: active workers exist; every queue with waiting jobs has an active worker; no
    live-looking worker has a stale heartbeat; workers run one version and agree on the
    pool-wide settings; no stopped or failed worker still holds jobs; no lock is held by a
    gone worker or left long expired; the dispatcher and the failover watcher each have a
    leader; worker clocks are within --max-clock-skew of the database's.
    """
    report = options.registry(ctx).request("GET", "/admin/queue/workers/validate",
                                           max_clock_skew_ms=max_clock_skew)
    if options.output_format(ctx) == "json":
        output.print_json(report)
    else:
        rows = [{"check": name, "result": "ok" if not n else f"{n} problem(s)"}
                for name, n in report["checks"].items()]
        output.table(rows, [("CHECK", "check"), ("RESULT", "result")],
                     title=f"{report['workers']} worker(s), {report['queues']} queue(s)")
        if report["problems"]:
            click.echo()
            output.table(report["problems"], [("CHECK", "check"), ("SUBJECT", "subject"),
                                              ("PROBLEM", "message")], title="problems")
    if not report["ok"]:
        raise CliError(f"the pool has {len(report['problems'])} problem(s)", FAILED)
    if options.output_format(ctx) != "json":
        output.success("the pool is healthy")


RESOURCE_COLUMNS: list[output.Column] = [
    ("WORKER", "worker_id"), ("STATUS", "status"), ("CHECKS", "checks"),
    ("NOT OK", "not_healthy"),
    ("CPU% AVG", lambda r: _round(r.get("cpu_avg"))), ("CPU% MAX", lambda r: _round(r.get("cpu_max"))),
    ("MEM", lambda r: output.size(r.get("memory_last"))),
    ("MEM MAX", lambda r: output.size(r.get("memory_max"))),
    ("BUSY", lambda r: None if r.get("utilization") is None else f"{r['utilization']:.0%}"),
    ("LAG MAX", lambda r: output.age((r.get("loop_lag_max_ms") or 0) / 1000)),
]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@worker_group.command("resource-stats")
@click.option("--window", type=click.FloatRange(min=1), default=300.0, show_default=True,
              metavar="SECONDS", help="Health checks of the last SECONDS.")
@options.remote_command
@click.pass_context
def resource_stats(ctx: click.Context, window: float) -> None:
    """CPU, memory, busy slots and event-loop lag per worker, from their health checks."""
    data = options.registry(ctx).request("GET", "/admin/queue/workers/resources", seconds=window)
    if options.output_format(ctx) == "json":
        output.print_json(data)
        return
    totals = data["totals"]
    output.table(data["workers"], RESOURCE_COLUMNS, empty="no health checks in the window",
                 title=f"last {output.age(window)}: {totals['workers']:.0f} live worker(s), "
                       f"{totals['concurrency']:.0f} slots, CPU {totals['cpu_last']:.0f}% "
                       f"(of one core), memory {output.size(totals['memory_last'])}")


@worker_group.command("export-config")
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to FILE instead of stdout.")
@click.option("--all", "everyone", is_flag=True, help="Stopped and failed workers too.")
@options.remote_command
@click.pass_context
def export_config(ctx: click.Context, out: Path | None, everyone: bool) -> None:
    """The pool's configuration as JSON: each worker's registration and pool-wide settings.

    Always JSON (the specification redirects it into a backup file). `skew` lists the
    settings whose values differ between workers.
    """
    data = options.registry(ctx).request("GET", "/admin/queue/workers/config",
                                         **({"all": "true"} if everyone else {}))
    if out is None:
        output.print_json(data)
        return
    try:
        out.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}", FAILED) from None
    output.success(f"wrote the configuration of {len(data['workers'])} worker(s) to {out}")


@worker_group.command("validate-config")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read settings from this file too (the environment wins).")
@options.output_option
@click.pass_context
def validate_config(ctx: click.Context, env_file: Path | None) -> None:
    """Check this machine's worker configuration; exit 1 when a check fails.

    Reads the settings as a worker would (environment, --env-file) and tries what it needs:
    the database and its schema, Redis when QUEUE_DRIVER=redis, WORKER_APP, the registry.
    """
    from qctl.config_check import validate

    checks, settings = validate(env_file)
    failed = [c for c in checks if not c.ok]
    if options.output_format(ctx) == "json":
        output.print_json({"ok": not failed, "checks": [vars(c) for c in checks],
                           "settings": settings})
    else:
        output.table([{"check": c.name, "result": "ok" if c.ok else "FAILED",
                       "detail": c.detail} for c in checks],
                     [("CHECK", "check"), ("RESULT", "result"), ("DETAIL", "detail")])
    if failed:
        raise CliError(f"{len(failed)} check(s) failed: " + ", ".join(c.name for c in failed),
                       FAILED)
