"""Options shared by commands (endpoints, token, context, output) and the clients they build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from qctl.contexts import Target, resolve
from qshared.client import Client

F = TypeVar("F", bound=Callable[..., Any])

_META = "qctl.{}"
OUTPUTS = ("table", "json")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep an option's value where every command of this invocation sees it.

    The same options exist on the root group and on each command, so
    `qctl --output json worker list` and `qctl worker list -o json` both work; a value
    given later (on the command) wins.
    """
    if value is not None:
        ctx.meta[_META.format(param.name)] = value
    return value


def _option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*decls, callback=_remember, expose_value=False, **kwargs)


def endpoint_options(f: F) -> F:
    """--scheduler-url, --registry-url, --failover-url, --token and --context."""
    for deco in reversed((
        _option("--scheduler-url", metavar="URL",
                help="Scheduler base URL (default: $QSTACK_SCHEDULER_URL, context, :8082)."),
        _option("--registry-url", metavar="URL",
                help="Registry base URL (default: $QSTACK_REGISTRY_URL, context, :8081)."),
        _option("--failover-url", metavar="URL",
                help="Failover watcher base URL (default: $QSTACK_FAILOVER_URL, context, :8083)."),
        _option("--token", metavar="TOKEN",
                help="Bearer token (default: $QSTACK_TOKEN, then the context's)."),
        _option("--context", "context_name", metavar="NAME",
                help="Use this context instead of the current one."),
    )):
        f = deco(f)
    return f


def output_option(f: F) -> F:
    """-o/--output table|json."""
    return _option("-o", "--output", type=click.Choice(OUTPUTS),
                   help="Output format (default: table).")(f)


def remote_command(f: F) -> F:
    """All the options of a command that talks to the services."""
    return endpoint_options(output_option(f))


def get(ctx: click.Context, name: str, default: Any = None) -> Any:
    """A remembered option value."""
    return ctx.meta.get(_META.format(name), default)


def output_format(ctx: click.Context) -> str:
    """The chosen --output, table by default."""
    return get(ctx, "output", "table")


def target(ctx: click.Context) -> Target:
    """The endpoints and token of this invocation (options > env > context > defaults)."""
    key = _META.format("target")
    if key not in ctx.meta:
        ctx.meta[key] = resolve(
            scheduler_url=get(ctx, "scheduler_url"), registry_url=get(ctx, "registry_url"),
            token=get(ctx, "token"), context=get(ctx, "context_name"),
            failover_url=get(ctx, "failover_url"),
        )
    return ctx.meta[key]


def scheduler(ctx: click.Context, timeout: float = 30.0) -> Client:
    """A client of the scheduler, closed when the command ends."""
    t = target(ctx)
    return ctx.with_resource(Client(t.scheduler_url, t.token, timeout=timeout))


def registry(ctx: click.Context, timeout: float = 30.0) -> Client:
    """A client of the registry, closed when the command ends."""
    t = target(ctx)
    return ctx.with_resource(Client(t.registry_url, t.token, timeout=timeout))


def failover(ctx: click.Context, timeout: float = 60.0) -> Client:
    """A client of the failover watcher (qfailover), closed when the command ends."""
    t = target(ctx)
    return ctx.with_resource(Client(t.failover_url, t.token, timeout=timeout))
