"""`qtui`: resolve where the stack is, build the HTTP client, run the dashboard."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from qshared.errors import QstackError


def main(argv: Sequence[str] | None = None) -> int:
    from qtui.config import connection

    try:
        conn = connection(argv)
    except QstackError as exc:
        print(f"qtui: {exc}", file=sys.stderr)
        return 2
    # Imported here so that `qtui --help` and usage errors answer at once.
    from qtui.app import QtuiApp
    from qtui.client import AdminClient

    client = AdminClient(
        scheduler_url=conn.scheduler_url, registry_url=conn.registry_url,
        failover_url=conn.failover_url, token=conn.token, prometheus_url=conn.prometheus_url,
    )
    name = conn.context or urlsplit(conn.scheduler_url).netloc
    QtuiApp(client, refresh_interval=conn.refresh, context_name=name).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
