"""How numbers, sizes, times and ages are written on screen (short, fixed units)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def epoch(value: str | float | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (as the API writes them), or None."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def duration(seconds: float | None) -> str:
    """3s, 4m12s, 2h03m, 5d02h; '-' for None."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(value: str | float | None, now: float) -> str:
    """How long ago an ISO time (or epoch seconds) was, e.g. '4m12s'."""
    when = epoch(value)
    return "-" if when is None else duration(now - when)


def clock(value: str | float | None) -> str:
    """HH:MM:SS (UTC) of an ISO time, for event logs."""
    when = epoch(value)
    if when is None:
        return "-"
    return datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S")


def when(value: str | float | None, now: float) -> str:
    """HH:MM:SS (UTC) within a day of now, else MM-DD HH:MM."""
    at = epoch(value)
    if at is None:
        return "-"
    fmt = "%H:%M:%S" if abs(now - at) < 86400 else "%m-%d %H:%M"
    return datetime.fromtimestamp(at, UTC).strftime(fmt)


def stamp(value: str | float | None) -> str:
    """YYYY-MM-DD HH:MM:SS (UTC) of an ISO time."""
    when = epoch(value)
    if when is None:
        return "-"
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S")


def size(n: float | None) -> str:
    """Bytes as 512B, 12.3K, 87M, 1.2G."""
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" or n >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"  # pragma: no cover - the loop returns at G


def number(n: float | None, digits: int = 0) -> str:
    """A count with thousands separators; '-' for None."""
    if n is None:
        return "-"
    return f"{n:,.{digits}f}"


def millis(ms: float | None) -> str:
    """A latency: 850ms, 1.2s."""
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def first_line(text: Any, width: int = 60) -> str:
    """The first line of a message, cut to width."""
    if not text:
        return ""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def error_summary(text: Any, width: int = 60) -> str:
    """What an error says in one line: a traceback's last line, else the first line."""
    if not text:
        return ""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):
        return first_line(lines[-1], width)
    return first_line(text, width)
