"""How statements run on MySQL: scripts of several statements in one round trip,
transactions over them, the values they give back, and driver errors as StorageError."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiomysql
import orjson
import pymysql

from qshared.errors import StorageError

log = logging.getLogger(__name__)

JSON_COLUMNS = frozenset({"payload", "result", "details", "config"})
BOOL_COLUMNS = frozenset({"paused", "live", "fresh", "due", "past_cutoff"})
DEADLOCK = 1213
DEADLOCK_RETRIES = 3
TRANSIENT = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError)


def translated(fn):
    """Turn driver errors into StorageError at the backend boundary."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except StorageError:
            raise
        except TRANSIENT as exc:
            raise StorageError(f"mysql: {type(exc).__name__}: {exc}") from exc

    return wrapper


def retried(fn):
    """Run a one-transaction method again when InnoDB chose it as a deadlock victim (its
    transaction was rolled back whole, so running it again is safe)."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return await fn(*args, **kwargs)
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != DEADLOCK or attempt == DEADLOCK_RETRIES - 1:
                    raise
                log.debug("%s: deadlock, again (%s)", fn.__name__, exc)
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper


def micros(seconds: float) -> int:
    """An interval in whole microseconds (the queries take intervals so)."""
    return round(seconds * 1_000_000)


def epoch(t: float | None) -> float | None:
    """An epoch time rounded to MySQL's microseconds (a longer literal would be truncated)."""
    return None if t is None else round(t, 6)


def to_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def column_value(name: str, v: Any) -> Any:
    """A column's value as the contract speaks: aware UTC datetimes, floats for MySQL's
    DECIMAL arithmetic, booleans for its TINYINTs, parsed JSON."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v
    if isinstance(v, Decimal):
        return float(v)
    if name in BOOL_COLUMNS:
        return bool(v)
    if name in JSON_COLUMNS and isinstance(v, str | bytes):
        return orjson.loads(v)
    return v


@dataclass(slots=True)
class Result:
    """What one statement of a script gave back."""

    rows: list[dict[str, Any]]
    rowcount: int
    lastrowid: int | None


async def _result(cur: aiomysql.Cursor) -> Result:
    rows: list[dict[str, Any]] = []
    if cur.description:
        names = [d[0] for d in cur.description]
        rows = [{n: column_value(n, v) for n, v in zip(names, row, strict=True)}
                for row in await cur.fetchall()]
    return Result(rows, cur.rowcount, cur.lastrowid)


Part = tuple[str, Mapping[str, Any] | None]  # a statement and its parameters (None: verbatim)


async def script(conn: aiomysql.Connection, parts: Sequence[Part]) -> list[Result]:
    """Run statements in one round trip (one multi-statement packet); one Result each."""
    async with conn.cursor() as cur:
        text = ";\n".join(render(cur, sql, args) for sql, args in parts)
        await cur.execute(text)
        out = [await _result(cur)]
        while await cur.nextset():
            out.append(await _result(cur))
    return out


class Tx:
    """One transaction on one connection: run() sends scripts, the first opens it."""

    def __init__(self, conn: aiomysql.Connection, opening: Sequence[Part]) -> None:
        self.conn, self._opening, self._open = conn, opening, False
        self.channels: set[str] = set()  # the channels its statements notified

    async def run(self, *parts: Part, commit: bool = False) -> list[Result]:
        """Results of `parts` only (not of the opening or the COMMIT)."""
        self.channels.update(args["channel"] for _, args in parts if args and "channel" in args)
        head = [] if self._open else list(self._opening)
        tail: list[Part] = [("COMMIT", None)] if commit else []
        results = await script(self.conn, [*head, *parts, *tail])
        self._open = not commit
        return results[len(head):len(results) - len(tail)]

    @property
    def open(self) -> bool:
        return self._open


def render(cur: aiomysql.Cursor, sql: str, args: Mapping[str, Any] | None) -> str:
    """The statement with its parameters in it, as the driver escapes them; a list or tuple
    becomes a parenthesized list for `IN %(name)s` (PyMySQL 1.2 no longer expands
    sequences; an empty one is `(NULL)`, which nothing is IN). None: the text as it is."""
    if args is None:
        return sql
    scalars = {}
    for name, value in args.items():
        if isinstance(value, list | tuple):
            items = ", ".join(cur.connection.escape(v) for v in value) or "NULL"
            sql = sql.replace(f"%({name})s", f"({items})".replace("%", "%%"))
        else:
            scalars[name] = value
    return cur.mogrify(sql, scalars)
