"""What the benchmark scripts share: a private schema, SQL, percentiles, the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of the values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on a connection of its own."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


@contextlib.contextmanager
def private_schema(db: str | None) -> Iterator[str | None]:
    """A schema of the benchmark's own on `db` (dropped after), as a URL; None stays None
    (the stack then starts its embedded PostgreSQL)."""
    if not db:
        yield None
        return
    schema = "bench_" + secrets.token_hex(4)
    asyncio.run(sql(db, f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{db}{'&' if '?' in db else '?'}search_path={schema}"
    finally:
        asyncio.run(sql(db, f'DROP SCHEMA "{schema}" CASCADE'))


def report(result: dict[str, Any], out: str, db: str | None, hide: tuple[str, ...] = ()) -> None:
    """Add where it ran, write the JSON to `out` and print the figures as a table."""
    result.update({
        "database": "postgresql (external)" if db else "postgresql (embedded pgserver)",
        "cores": os.cpu_count(), "at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    shown = {k: v for k, v in result.items() if k not in hide}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"{key:<{width}}  {value}")
