"""Where qtui connects: options, then QSTACK_* environment, then the qctl context, then defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from qshared.contexts import ContextStore, resolve


@dataclass(frozen=True)
class Connection:
    """The resolved endpoints, token and refresh settings of one qtui run."""

    scheduler_url: str
    registry_url: str
    failover_url: str
    token: str | None
    context: str | None = None
    prometheus_url: str | None = None
    refresh: float = 1.0
    """Seconds between refreshes."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qtui", description="The qstack dashboard: the whole system live, acted on from the keyboard.",
        epilog="Without options qtui uses the current qctl context (`qctl up` registers 'local').",
    )
    p.add_argument("--context", metavar="NAME", help="use this qctl context, not the current one")
    p.add_argument("--url", metavar="GATEWAY_URL",
                   help="one gateway URL for every service (nginx in front of the stack)")
    p.add_argument("--scheduler-url", metavar="URL", help="scheduler base URL (or $QSTACK_SCHEDULER_URL)")
    p.add_argument("--registry-url", metavar="URL", help="registry base URL (or $QSTACK_REGISTRY_URL)")
    p.add_argument("--failover-url", metavar="URL", help="failover watcher URL (or $QSTACK_FAILOVER_URL)")
    p.add_argument("--token", metavar="TOKEN", help="bearer token (or $QSTACK_TOKEN, or the context's)")
    p.add_argument("--prometheus-url", metavar="URL",
                   help="Prometheus, for firing alerts on the overview (or $QSTACK_PROMETHEUS_URL)")
    p.add_argument("--refresh", metavar="SECONDS", type=float, default=None,
                   help="seconds between refreshes (default 1, or $QSTACK_TUI_REFRESH)")
    return p


def connection(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
               store: ContextStore | None = None) -> Connection:
    """Parse the command line and resolve it the way qctl resolves its options.

    `--url` stands for each service URL not given on its own. Raises SystemExit on bad usage
    and qshared errors for a bad context.
    """
    env = os.environ if env is None else env
    args = parser().parse_args(argv)
    target = resolve(
        scheduler_url=args.scheduler_url or args.url, registry_url=args.registry_url or args.url,
        failover_url=args.failover_url or args.url, token=args.token, context=args.context,
        env=env, store=store,
    )
    refresh = args.refresh if args.refresh is not None else float(env.get("QSTACK_TUI_REFRESH") or 1.0)
    if not 0.1 <= refresh <= 3600:
        parser().error(f"--refresh must be between 0.1 and 3600 seconds, got {refresh:g}")
    prometheus = args.prometheus_url or env.get("QSTACK_PROMETHEUS_URL") or None
    return Connection(
        scheduler_url=target.scheduler_url, registry_url=target.registry_url,
        failover_url=target.failover_url, token=target.token, context=target.context,
        prometheus_url=prometheus.rstrip("/") if prometheus else None, refresh=refresh,
    )
