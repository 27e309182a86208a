"""`qctl context`: list, add, use and remove named stacks."""

from __future__ import annotations

import click

from qctl import output
from qctl.contexts import Context, ContextStore
from qctl.errors import FAILED, CliError
from qctl.options import output_format, output_option


def _mask(token: str | None) -> str | None:
    if not token:
        return None
    return token[:4] + "…" if len(token) > 8 else "****"


def _strip(url: str | None) -> str | None:
    return url.rstrip("/") if url else None


@click.group("context", short_help="Named stacks (URLs, token), like kubectl contexts.")
def context_group() -> None:
    """Named stacks (URLs and token), like kubectl contexts; `qctl up` adds "local"."""


@context_group.command("list")
@output_option
@click.option("--show-token", is_flag=True, help="Print tokens in full.")
@click.pass_context
def list_contexts(ctx: click.Context, show_token: bool) -> None:
    """List contexts; the current one is marked with *."""
    store = ContextStore()
    rows = [
        {
            "current": c.name == store.current,
            "name": c.name,
            "scheduler_url": c.scheduler_url or c.gateway_url,
            "registry_url": c.registry_url or c.gateway_url,
            "failover_url": c.failover_url or c.gateway_url,
            "token": c.token if show_token else _mask(c.token),
        }
        for c in sorted(store.contexts.values(), key=lambda c: c.name)
    ]
    if output_format(ctx) == "json":
        output.print_json({"current": store.current, "contexts": rows})
        return
    output.table(
        rows,
        [("", lambda r: "*" if r["current"] else " "), ("NAME", "name"), ("SCHEDULER", "scheduler_url"),
         ("REGISTRY", "registry_url"), ("FAILOVER", "failover_url"), ("TOKEN", "token")],
        empty=f"no contexts yet ({store.path}); `qctl up` or `qctl context add` creates one",
    )


@context_group.command("add")
@click.argument("name")
@click.option("--scheduler-url", metavar="URL", help="Scheduler base URL.")
@click.option("--registry-url", metavar="URL", help="Registry base URL.")
@click.option("--failover-url", metavar="URL", help="Failover watcher base URL.")
@click.option("--gateway-url", metavar="URL",
              help="One URL serving both (the nginx gateway); the two above override it.")
@click.option("--token", metavar="TOKEN", help="Bearer token of that stack.")
@click.option("--use/--no-use", "make_current", default=False,
              help="Make it the current context (the first context always is).")
def add_context(
    name: str, scheduler_url: str | None, registry_url: str | None, failover_url: str | None,
    gateway_url: str | None, token: str | None, make_current: bool,
) -> None:
    """Add a context, or replace the one of that name."""
    if not (scheduler_url or registry_url or failover_url or gateway_url):
        raise click.UsageError("give --scheduler-url/--registry-url/--failover-url or --gateway-url")
    for url in (scheduler_url, registry_url, failover_url, gateway_url):
        if url and not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http(s) URL")
    store = ContextStore()
    store.put(
        Context(name, _strip(scheduler_url), _strip(registry_url), token, _strip(gateway_url),
                _strip(failover_url)),
        make_current=make_current,
    )
    suffix = " (current)" if store.current == name else ""
    output.success(f"context {name!r} saved{suffix}")


@context_group.command("use")
@click.argument("name")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    ContextStore().use(name)
    output.success(f"now using context {name!r}")


@context_group.command("remove")
@click.argument("name")
def remove_context(name: str) -> None:
    """Delete the context NAME."""
    ContextStore().remove(name)
    output.success(f"context {name!r} removed")


@context_group.command("current")
def current_context() -> None:
    """Print the name of the current context (exit 1 when none is set)."""
    store = ContextStore()
    current = store.current_context()
    if current is None:
        raise CliError("no current context (see `qctl context list`)", FAILED)
    click.echo(current.name)
