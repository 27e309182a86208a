"""A worker's pool-wide configuration: what every worker of one pool should agree on.

Workers send it when they register (`queue_workers.config`); `qctl worker export-config`
writes it out, and `qctl worker validate-pool` reports workers whose values differ.
Queues and concurrency are left out: they differ between workers on purpose.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from qshared.config import Settings

# Settings a pool should share: a worker with other values behaves differently from its
# peers (it is judged dead at another age, retries on another curve, reads another app).
POOL_SETTINGS = (
    "worker_health_check_interval", "worker_registration_ttl", "worker_grace_period",
    "worker_app", "queue_driver", "qstack_report_interval", "qstack_dispatch_poll",
    "qstack_retry_base", "qstack_retry_max",
)
# Keys that may differ without harm: shown by export-config, not compared.
INFORMATIONAL = ("python",)


def database_of(dsn: str) -> str:
    """The database a DSN points at, without user or password: scheme://host:port/name,
    with its query (a search_path, say) but no password in it."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    query = "&".join(p for p in parts.query.split("&")
                     if p and "password" not in p.split("=", 1)[0].lower())
    return f"{parts.scheme}://{host}{port}{parts.path}" + (f"?{query}" if query else "")


def pool_config(settings: Settings, tasks: Iterable[str]) -> dict[str, Any]:
    """What a worker reports of itself at registration."""
    config: dict[str, Any] = {name: getattr(settings, name) for name in POOL_SETTINGS}
    config["database"] = database_of(settings.dsn)
    config["tasks"] = sorted(tasks)
    config["python"] = platform.python_version()
    return config


def config_skew(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """Keys whose values differ between workers: {key: {value (as text): [worker ids]}}.

    Workers that report no configuration (registered by an older version) are left out.
    """
    seen: dict[str, dict[str, list[str]]] = {}
    for worker_id, config in sorted(configs.items()):
        if not config:
            continue
        for key, value in config.items():
            if key in INFORMATIONAL:
                continue
            text = ",".join(value) if isinstance(value, list) else str(value)
            seen.setdefault(key, {}).setdefault(text, []).append(worker_id)
    return {key: values for key, values in sorted(seen.items()) if len(values) > 1}
