"""`qctl up`: run a whole local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import click
from rich.text import Text

from qctl import output
from qctl.contexts import LOCAL_CONTEXT, Context, ContextStore
from qctl.database import redact
from qctl.errors import FAILED, CliError
from qctl.stack import Service, Stack
from qshared.config import load_settings


def _queues(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise click.BadParameter("name at least one queue")
    return queues


def database_option_value(db: str | None) -> str | None:
    """--db, DATABASE_URL, or DB_* when DB_HOST is set; None means the embedded server."""
    if db:
        return db
    if os.environ.get("DATABASE_URL") or os.environ.get("DB_HOST"):
        return load_settings().dsn
    return None


def print_summary(stack: Stack, context_name: str | None) -> None:
    s = stack.summary()
    db = redact(s["database_url"] or "")
    if s["embedded_database"]:
        db += f"  (embedded, data in {stack.state_dir / 'pg'})"
    ports = [u.rsplit(":", 1)[1] for u in s["worker_urls"]]
    worker_ports = f" on ports {ports[0]}..{ports[-1]}" if ports else ""
    lines = [
        ("database", db),
        ("registry", s["registry_url"]),
        ("scheduler", s["scheduler_url"]),
        ("workers", f"{len(ports)} x concurrency {s['concurrency']}, queues "
                    f"{','.join(s['queues'])}{worker_ports}"),
        ("token", s["token"] + ("  (generated; set QSTACK_TOKEN to choose one)"
                                if stack.token_generated else "")),
        ("logs", s["log_dir"]),
    ]
    if stack.failover:
        lines.insert(3, ("failover", stack.services["failover"].url))
    if context_name:
        lines.append(("context", f"{context_name!r} is now current: qctl commands reach "
                                 "this stack"))
    text = Text("qstack is up\n", style="bold green")
    for key, value in lines:
        text.append("  " + key.ljust(11), "bold").append(value + "\n", "")
    text.append(
        "\nTry:\n"
        "  qctl enqueue noop --payload '{\"n\": 1}' --wait\n"
        "  qctl worker list\n"
        "  qctl queue stats\n"
        f"  curl -H 'Authorization: Bearer {s['token']}' {s['scheduler_url']}/admin/queue/stats\n"
    )
    text.append("\nPress Ctrl-C to stop (twice to stop at once).", "dim")
    output.show(text)


@click.command("up", short_help="Run a local stack in the foreground.")
@click.option("--workers", "-w", type=click.IntRange(min=0), default=3, show_default=True,
              help="Worker processes to run.")
@click.option("--db", metavar="URL",
              help="Database URL (default: DATABASE_URL, DB_*, else an embedded PostgreSQL).")
@click.option("--port-base", type=click.IntRange(1, 65000), default=8080, show_default=True,
              help="Registry on P+1, scheduler on P+2, worker i on P+10+i.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Jobs each worker runs at once.")
@click.option("--queues", default="default,emails,reports", show_default=True,
              callback=_queues, help="Comma-separated queues the workers serve.")
@click.option("--app", metavar="MODULE", help="Module the workers import to register tasks.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".qstack"), show_default=True,
              help="Embedded database and logs live here.")
@click.option("--failover/--no-failover", default=None,
              help="Also run qfailover on P+3 (default: when it is installed).")
@click.option("--startup-timeout", type=click.FloatRange(min=1), default=30.0,
              show_default=True, metavar="S", help="How long each service may take to start.")
@click.option("--grace", type=click.FloatRange(min=0), default=35.0, show_default=True,
              metavar="S", help="How long children may take to stop before SIGKILL "
              "(workers finish running jobs for up to WORKER_GRACE_PERIOD, 30s by default).")
@click.option("--context-name", default=LOCAL_CONTEXT, show_default=True,
              help="The context registered for this stack.")
def up(
    workers: int, db: str | None, port_base: int, concurrency: int, queues: list[str],
    app: str | None, log_level: str, state_dir: Path, failover: bool | None,
    startup_timeout: float, grace: float, context_name: str,
) -> None:
    """Run a local stack: database, migrations, registry, scheduler and workers.

    Without --db or DATABASE_URL a real PostgreSQL is started from the pgserver wheel
    in STATE_DIR/pg. A token is generated unless QSTACK_TOKEN is set. The stack runs in
    the foreground; Ctrl-C or SIGTERM stops it.
    """
    if failover is None:
        failover = importlib.util.find_spec("qfailover") is not None
    def on_exit(service: Service, code: int) -> None:
        output.show(Text(f"{service.name} exited unexpectedly with code {code}; see "
                         f"{service.log_path}\n{service.log_tail(5)}", style="bold red"),
                    stderr=True)

    def log(message: str) -> None:
        output.show(Text(message, style="dim"), stderr=True)

    stack = Stack(
        workers=workers, database_url=database_option_value(db), port_base=port_base,
        concurrency=concurrency, queues=queues, token=os.environ.get("QSTACK_TOKEN") or None,
        state_dir=state_dir, log_level=log_level, app=app, startup_timeout=startup_timeout,
        failover=failover, on_exit=on_exit, log=log,
    )
    previous = {sig: signal.signal(sig, lambda *_: stack.request_stop())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stack.start()
        ContextStore().put(
            Context(context_name, stack.scheduler_url, stack.registry_url, stack.token,
                    failover_url=stack.services["failover"].url if failover else None),
            make_current=True,
        )
        print_summary(stack, context_name)
        stack.wait()
        if not stack.stop_requested:
            raise CliError("every service has exited; stopping", FAILED)
        log("stopping...")
    finally:
        stack.stop(grace=grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
