"""The root `qctl` command group: global options, error handling and the command list."""

from __future__ import annotations

import importlib

import click

from qctl.errors import EXIT_CODES_HELP, to_cli_error
from qctl.options import endpoint_options, output_option
from qshared.errors import QstackError

# Each command's name and where it is defined, imported only when it runs (click's lazy
# loading of subcommands): a command against the services then starts without the database
# drivers, the backup format and the local stack's code, about half of qctl's start-up.
COMMANDS: dict[str, str] = {
    "up": "qctl.commands.up:up",
    "demo": "qctl.commands.demo:demo",
    "enqueue": "qctl.commands.jobs:enqueue",
    "health": "qctl.commands.queues:health",
    "context": "qctl.commands.context:context_group",
    "db": "qctl.commands.db:db_group",
    "failover": "qctl.commands.failover:failover_group",
    "job": "qctl.commands.jobs:job_group",
    "queue": "qctl.commands.queues:queue_group",
    "worker": "qctl.commands.workers:worker_group",
    "backup": "qctl.commands.backup:backup",
    "restore": "qctl.commands.backup:restore",
}


class QctlGroup(click.Group):
    """The root group: loads each command when it is first asked for (COMMANDS), and turns
    qstack errors into `error: ...` and the documented exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert command.name == cmd_name, (cmd_name, command.name)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)

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
