"""Entry point: `qworker start ...` runs a worker; `qworker health` checks the local one."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from qshared.config import Settings, load_settings
from qshared.errors import ConfigError
from qshared.http import run, serve, setup_logging


def advertised_url(host: str, port: int) -> str:
    """Where the scheduler reaches this worker's /admin/wake when QSTACK_ADVERTISE_URL is
    unset: the listen address, or this machine's own address when listening on all of them
    (0.0.0.0 in a container: the container's address on its network)."""
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = socket.gethostname()
    return f"http://{host}:{port}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qworker", description="qstack worker")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="run a worker until SIGTERM")
    start.add_argument("--queues", help="comma-separated queues (WORKER_QUEUES)")
    start.add_argument("--concurrency", type=int, help="jobs at once (WORKER_CONCURRENCY)")
    start.add_argument("--prefetch", type=int, help="extra jobs held (WORKER_PREFETCH)")
    start.add_argument("--app", help="module that registers your tasks (WORKER_APP)")
    start.add_argument("--port", type=int, help="port of /health and /metrics (QSTACK_PORT)")
    health = sub.add_parser("health", help="exit 0 when the local worker is healthy, else 1")
    health.add_argument("--url", help="health URL (default: this host's QSTACK_PORT)")
    health.add_argument("--timeout", type=float, default=5.0)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name, field in (("queues", "worker_queues"), ("concurrency", "worker_concurrency"),
                        ("prefetch", "worker_prefetch"), ("app", "worker_app"),
                        ("port", "qstack_port")):
        value = getattr(args, name, None)
        if value is not None:
            overrides[field] = value
    return load_settings(**overrides)


def _start(settings: Settings) -> None:
    from qworker.app import WORKER, Options, create_app

    options = Options(
        queues=settings.queues, concurrency=settings.worker_concurrency,
        prefetch=settings.prefetch, app_module=settings.worker_app,
    )

    async def main() -> None:
        stop = asyncio.Event()
        app = create_app(settings, options, stop)


        def on_started(port: int) -> None:
            w = app[WORKER]
            if w.admin_url is None:
                w.admin_url = advertised_url(settings.qstack_host, port)
            asyncio.get_running_loop().create_task(w.start())

        await serve(app, settings.qstack_host, settings.qstack_port,
                    on_started=on_started, stop=stop)

    run(main)


def _health(settings: Settings, url: str | None, timeout: float) -> int:
    import httpx

    host = "127.0.0.1" if settings.qstack_host in ("0.0.0.0", "::") else settings.qstack_host
    url = url or f"http://{host}:{settings.qstack_port}{settings.health_check_endpoint}"
    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(resp.text)
    return 0 if resp.status_code == 200 else 1


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        sys.exit(f"qworker: {exc}")
    if args.command == "health":
        sys.exit(_health(settings, args.url, args.timeout))
    setup_logging(settings.log_level)
    _start(settings)


if __name__ == "__main__":
    main()
