"""Rendering of command results as rich tables or as plain JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

# A column: (header, key or function of the row).
Column = tuple[str, str | Callable[[Mapping[str, Any]], Any]]

_STYLES = {
    "active": "green", "healthy": "green", "succeeded": "green", "ok": "green",
    "applied": "green", "running": "cyan", "assigned": "cyan", "pending": "yellow",
    "draining": "yellow", "degraded": "yellow", "scheduled": "yellow", "paused": "yellow",
    "stopped": "dim", "cancelled": "dim", "failed": "red", "dead": "red",
    "unhealthy": "red", "unreachable": "red", "missing": "red",
}


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr; wide when not a terminal, so pipes keep rows."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        width = int(os.environ.get("COLUMNS", "0") or 0) or 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def show(renderable: Any, stderr: bool = False) -> None:
    """Print a rich renderable; into a pipe without colour and without trailing blanks."""
    out = console(stderr)
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()), err=stderr)


def print_json(data: Any) -> None:
    """Pretty JSON on stdout, dates as ISO strings, no colour (pipe-friendly)."""
    click.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def age(seconds: Any) -> str:
    """A duration in seconds as 850ms / 12.3s / 4m05s / 2h10m / 3d4h."""
    if seconds is None or seconds == "":
        return "-"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600)}h"


def size(num: Any) -> str:
    """Bytes as a short human size."""
    if num is None:
        return "-"
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def cell(value: Any) -> Text:
    """One table cell: states coloured, None as '-', lists joined, long JSON compact."""
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list | tuple) and not any(isinstance(v, dict | list) for v in value):
        return Text(",".join(str(v) for v in value))
    if isinstance(value, dict | list | tuple):
        return Text(json.dumps(value, default=str, ensure_ascii=False))
    if isinstance(value, float):
        return Text(f"{value:.3f}".rstrip("0").rstrip(".") if value else "0")
    text = str(value)
    return Text(text, style=_STYLES.get(text, ""))


def table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """Print rows as a table with the given columns."""
    rows = list(rows)
    if not rows:
        show(Text(empty, style="dim"))
        return
    if title:
        show(Text(title, style="bold"))
    t = Table(header_style="bold", box=None, pad_edge=False)
    for header, _ in columns:
        t.add_column(header, overflow="fold")
    for row in rows:
        t.add_row(*(cell(key(row) if callable(key) else row.get(key)) for _, key in columns))
    show(t)


def fields(data: Mapping[str, Any], order: Sequence[str] = (), title: str | None = None) -> None:
    """Print one object as a two-column FIELD / VALUE table, known fields first."""
    keys = [k for k in order if k in data] + [k for k in data if k not in order]
    if title:
        show(Text(title, style="bold"))
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key in keys:
        t.add_row(key, cell(data[key]))
    show(t)


def emit(
    output: str, data: Any, rows: Iterable[Mapping[str, Any]], columns: Sequence[Column],
    **table_kwargs: Any,
) -> None:
    """JSON of `data` for --output json, else a table of `rows`."""
    if output == "json":
        print_json(data)
    else:
        table(rows, columns, **table_kwargs)


def success(message: str) -> None:
    """A short confirmation line on stdout."""
    show(Text(message, style="green"))


def warn(message: str) -> None:
    """A warning line on stderr."""
    show(Text(message, style="yellow"), stderr=True)
