"""The root `qctl` command group: global options, error handling and the command list."""

from __future__ import annotations

import click

from qctl.commands.backup import backup, restore
from qctl.commands.context import context_group
from qctl.commands.db import db_group
from qctl.commands.demo import demo
from qctl.commands.failover import failover_group
from qctl.commands.jobs import enqueue, job_group
from qctl.commands.queues import health, queue_group
from qctl.commands.up import up
from qctl.commands.workers import worker_group
from qctl.errors import EXIT_CODES_HELP, to_cli_error
from qctl.options import endpoint_options, output_option
from qshared.errors import QstackError


class QctlGroup(click.Group):
    """A click group that turns qstack errors into `error: ...` and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except QstackError as exc:
            raise to_cli_error(exc) from None


@click.group(
    cls=QctlGroup,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@endpoint_options
@output_option
@click.version_option(package_name="qctl", prog_name="qctl")
def cli() -> None:
    """Operate a qstack: start a local stack, enqueue jobs, inspect workers and queues.

    Commands also answer to the specification's colon spellings:
    `qctl worker:list` is `qctl worker list`, `qctl db:migrate` is `qctl db migrate`.
    Remote commands find the services through --scheduler-url/--registry-url/
    --failover-url/--token, then QSTACK_SCHEDULER_URL/QSTACK_REGISTRY_URL/
    QSTACK_FAILOVER_URL/QSTACK_TOKEN, then the current context (`qctl context`),
    then http://127.0.0.1:8082, :8081 and :8083.
    """


for _command in (up, demo, enqueue, health, context_group, db_group, failover_group, job_group,
                 queue_group, worker_group, backup, restore):
    cli.add_command(_command)
