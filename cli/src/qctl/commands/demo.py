"""`qctl demo`: `qctl up` with a demo load and a worker killer, then qtui in the foreground."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.text import Text

from qctl import output
from qctl.commands.up import database_option_value, print_summary
from qctl.contexts import Context, ContextStore
from qctl.demo import DemoLoad
from qctl.errors import USAGE, CliError
from qctl.processes import command_for
from qctl.stack import Service, Stack

DEMO_CONTEXT = "demo"


@click.command("demo", short_help="A local stack with a demo load, watched in qtui.")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=3, show_default=True,
              help="Worker processes to run.")
@click.option("--db", metavar="URL",
              help="Database URL (default: DATABASE_URL, DB_*, else an embedded PostgreSQL).")
@click.option("--port-base", type=click.IntRange(1, 65000), default=8080, show_default=True,
              help="Registry on P+1, scheduler on P+2, failover on P+3, worker i on P+10+i.")
@click.option("--rate", type=click.FloatRange(min=0), default=20.0, show_default=True,
              metavar="JOBS/S", help="How many demo jobs to submit per second.")
@click.option("--chaos-every", type=click.FloatRange(min=5), default=60.0, show_default=True,
              metavar="S", help="Kill a worker (SIGKILL) this often; it restarts 8 s later.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".qstack"), show_default=True,
              help="Embedded database and logs live here.")
@click.option("--tui/--no-tui", default=True, show_default=True,
              help="Open qtui in the foreground (without: run until Ctrl-C, like `qctl up`).")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="S", help="How long children may take to stop before SIGKILL.")
def demo(
    workers: int, db: str | None, port_base: int, rate: float, chaos_every: float,
    state_dir: Path, tui: bool, grace: float,
) -> None:
    """Run a local stack (like `qctl up`, with the failover watcher) and a demo load on the
    queues default, emails and reports: quick, slow, flaky and failing jobs, and now and then
    a worker killed and restarted so that failover shows. Then open qtui on it; quitting qtui
    stops everything. Logs go to STATE_DIR/logs (demo.log for the demo's own).
    """
    if tui and importlib.util.find_spec("qtui") is None:
        raise CliError("qtui is not installed (it comes with the workspace: `uv sync`); "
                       "or run `qctl demo --no-tui`", USAGE)
    log_path = state_dir / "logs" / "demo.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("a", buffering=1)

    def log(message: str) -> None:  # never on the terminal: qtui owns it
        log_file.write(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}\n")

    def on_exit(service: Service, code: int) -> None:
        log(f"{service.name} exited with code {code}; see {service.log_path}")

    stack = Stack(
        workers=workers, database_url=database_option_value(db), port_base=port_base,
        queues=("default", "emails", "reports"), token=os.environ.get("QSTACK_TOKEN") or None,
        state_dir=state_dir, failover=True, on_exit=on_exit, log=log,
    )
    load = DemoLoad(stack, rate=rate, chaos_every=chaos_every, log=log)
    previous = {sig: signal.signal(sig, lambda *_: stack.request_stop())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        output.show(Text(f"starting the demo stack (logs in {stack.log_dir}) ...", style="dim"))
        stack.start()
        ContextStore().put(
            Context(DEMO_CONTEXT, stack.scheduler_url, stack.registry_url, stack.token,
                    failover_url=stack.services["failover"].url),
            make_current=True,
        )
        load.start()
        if tui:
            qtui = subprocess.Popen([*command_for("qtui"), "--context", DEMO_CONTEXT])
            while qtui.poll() is None and not stack.stop_requested:
                stack.poll()
                time.sleep(0.2)
            if qtui.poll() is None:
                qtui.terminate()
                qtui.wait(10)
        else:
            print_summary(stack, DEMO_CONTEXT)
            stack.wait()
    finally:
        load.stop()
        log(f"demo load: {load.enqueued} jobs submitted, {load.kills} workers killed")
        stack.stop(grace=grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log_file.close()
    output.show(Text(f"demo stopped: {load.enqueued} jobs submitted, {load.kills} workers "
                     "killed and restarted", style="dim"))
