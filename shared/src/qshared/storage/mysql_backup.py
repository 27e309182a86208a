"""MySQL's side of backup and restore: tables read in one consistent snapshot, loaded in one
transaction with multi-row INSERTs, counters carried over (the format is qshared.backup's,
so a PostgreSQL backup restores here and back)."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiomysql
import pymysql

from qshared.backup import (
    BATCH,
    DATA_TABLES,
    FENCING_SEQUENCE,
    BackupError,
    Column,
    Record,
    decode_value,
    load_records,
)
from qshared.errors import Conflict, StorageError
from qshared.storage.base import TABLES
from qshared.storage.mysql_scripts import render

# MariaDB's JSON is LONGTEXT with a json_valid check: its columns are known by name.
JSON_COLUMNS = {("jobs", "payload"), ("jobs", "result"), ("worker_health_checks", "details"),
                ("failover_events", "details"), ("queue_workers", "config")}
_KINDS = {
    "tinyint": "int", "smallint": "int", "mediumint": "int", "int": "int", "bigint": "int",
    "double": "float", "float": "float",
    "char": "text", "varchar": "text", "tinytext": "text", "text": "text",
    "mediumtext": "text", "longtext": "text", "json": "json",
    "datetime": "timestamp", "timestamp": "timestamp",
    "binary": "bytes", "varbinary": "bytes", "tinyblob": "bytes", "blob": "bytes",
    "mediumblob": "bytes", "longblob": "bytes",
}
# The earliest DATETIME: PostgreSQL's -infinity (a snapshot never computed) lands here.
_EARLIEST = datetime(1000, 1, 1)
# Server errors that mean "this row does not fit", not "the database failed".
_REFUSED = {1048, 1062, 1264, 1292, 1366, 1406, 1452, 1690, 3140, 3819, 4025, 4038}
_CHECK_FAILED = {3819, 4025}  # MySQL, MariaDB

def ident(name: str) -> str:
    """A quoted identifier (names here come from TABLES and the catalog only)."""
    return "`" + name.replace("`", "``") + "`"


async def _rows(conn: aiomysql.Connection, sql: str, args: Any = None) -> list[dict[str, Any]]:
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute(render(cur, sql, args or {}))
        return list(await cur.fetchall())


async def table_columns(
    conn: aiomysql.Connection, q: Mapping[str, str], tables: Iterable[str]
) -> dict[str, list[Column]]:
    """The stored columns of the tables that exist, in order.

    Raises:
        StorageError: a column has a type the backup format has no kind for.
    """
    out: dict[str, list[Column]] = {}
    for r in await _rows(conn, q["backup_columns"], {"tables": list(tables)}):
        table, name = r["table_name"], r["column_name"]
        kind = _KINDS.get(r["data_type"].lower())
        if (table, name) in JSON_COLUMNS:
            kind = "json"
        elif r["column_type"].lower().startswith("tinyint(1)"):
            kind = "bool"  # BOOLEAN
        if kind is None:
            raise StorageError(f"mysql: column {table}.{name} has type {r['column_type']}, "
                               "which the backup format does not support")
        out.setdefault(table, []).append(
            Column(name, kind, bool(r["is_identity"]), r["pk_position"]))
    return out


def _exported(kind: str, value: Any) -> Any:
    """A stored value as Storage.export_tables hands it on."""
    if value is None:
        return None
    if kind == "timestamp":
        return value.replace(tzinfo=UTC)
    if kind == "bool":
        return bool(value)
    if kind == "json" and isinstance(value, bytes):
        return value.decode()
    return value


# -- export ------------------------------------------------------------------------------
async def export_tables(
    conn: aiomysql.Connection, q: Mapping[str, str], write: Callable[[Record], Awaitable[None]]
) -> None:
    """Storage.export_tables on one connection of its own."""
    try:  # MySQL 8 caches information_schema's counters (AUTO_INCREMENT) for a day
        await _rows(conn, "SET SESSION information_schema_stats_expiry = 0", None)
    except pymysql.err.MySQLError:
        pass  # MariaDB reads them live
    async with conn.cursor() as cur:
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    try:
        [taken] = await _rows(conn, q["backup_now"])
        columns = await table_columns(conn, q, TABLES)
        missing = [t for t in TABLES if t not in columns]
        if missing:
            raise StorageError(f"mysql: table(s) {', '.join(missing)} do not exist: "
                               "run `qctl db migrate` first")
        counts = {}
        for t in TABLES:
            [row] = await _rows(conn, f"SELECT COUNT(*) AS n FROM {ident(t)}")
            counts[t] = row["n"]
        schema = [{"version": r["version"], "name": r["name"]}
                  for r in await _rows(conn, q["backup_schema"])]
        # AUTO_INCREMENT counters are not transactional: read now, each is at least every id
        # the snapshot holds; the fencing counter is a row, read in the snapshot
        sequences = {r["name"]: int(r["value"])
                     for r in await _rows(conn, q["backup_sequences"], {"tables": list(TABLES)})}
        [fencing] = await _rows(conn, q["fencing_sequence"])
        if fencing["value"]:
            sequences[FENCING_SEQUENCE] = int(fencing["value"])
        await write({"taken_at": taken["now"].replace(tzinfo=UTC), "schema": schema,
                     "tables": counts, "sequences": dict(sorted(sequences.items()))})
        for table in TABLES:
            cols = columns[table]
            await write({"table": table, "columns": [c.name for c in cols],
                         "types": [c.kind for c in cols]})
            key = sorted((c for c in cols if c.pk_position is not None),
                         key=lambda c: c.pk_position) or cols
            kinds = [c.kind for c in cols]
            async with conn.cursor(aiomysql.SSCursor) as cur:  # streamed, not buffered
                await cur.execute(
                    f"SELECT {', '.join(ident(c.name) for c in cols)} FROM {ident(table)}"
                    f" ORDER BY {', '.join(ident(c.name) for c in key)}")
                while rows := await cur.fetchmany(BATCH):
                    for row in rows:
                        await write([_exported(k, v) for k, v in zip(kinds, row, strict=True)])
    finally:
        await conn.rollback()


# -- import ------------------------------------------------------------------------------
def _stored(table: str, column: str, kind: str, value: Any) -> Any:
    """A decoded portable value as this database stores it."""
    if value is None:
        return None
    if kind == "timestamp":
        value = value.astimezone(UTC).replace(tzinfo=None)
        return max(value, _EARLIEST)
    if kind == "float" and not math.isfinite(value):
        raise BackupError(f"table {table}: column {column} holds {value}, which MySQL cannot "
                          "store (no infinities or NaN in a DOUBLE)")
    return value


class _Loader:
    """Inserts one table's rows in batches, converting them by this database's columns."""

    def __init__(self, conn: aiomysql.Connection, table: str, names: list[str],
                 target: list[Column]) -> None:
        by_name = {c.name: c for c in target}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise BackupError(f"table {table}: column(s) {', '.join(unknown)} do not exist "
                              "in this database's schema")
        self.conn, self.table, self.names = conn, table, names
        self.converters = [
            functools.partial(_convert, table, n, by_name[n].kind) for n in names]
        self.identities = [(i, n) for i, n in enumerate(names) if by_name[n].identity]
        # bytes go as hex (aiomysql 0.3 with PyMySQL 1.2 cannot pass bytes parameters); a
        # table with such a column (system_snapshots, a few rows) is inserted row by row
        self.hex = [by_name[n].kind == "bytes" for n in names]
        values = ", ".join("UNHEX(%s)" if h else "%s" for h in self.hex)
        self.sql = (f"INSERT INTO {ident(table)} ({', '.join(ident(n) for n in names)})"
                    f" VALUES ({values})")
        self.tops: dict[str, int] = {}
        self.batch: list[tuple[Any, ...]] = []
        self.loaded = 0

    async def add(self, values: list[Any]) -> None:
        row = tuple(conv(v) for conv, v in zip(self.converters, values, strict=True))
        if any(self.hex):
            row = tuple(v.hex() if h and v is not None else v
                        for h, v in zip(self.hex, row, strict=True))
        for i, name in self.identities:
            if row[i] is not None and row[i] > self.tops.get(name, 0):
                self.tops[name] = row[i]
        self.batch.append(row)
        if len(self.batch) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if not self.batch:
            return
        try:
            async with self.conn.cursor() as cur:
                await cur.executemany(self.sql, self.batch)  # multi-row INSERTs
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if code not in _REFUSED:
                raise
            why = f"violates a check constraint: {exc.args[1]}" if code in _CHECK_FAILED else (
                exc.args[1] if len(exc.args) > 1 else str(exc))
            raise BackupError(f"table {self.table}: the database refused a row (one of the "
                              f"{len(self.batch)} read up to here): {why}") from None
        self.loaded += len(self.batch)
        self.batch = []


def _convert(table: str, column: str, kind: str, value: Any) -> Any:
    return _stored(table, column, kind, decode_value(kind, value))


async def import_tables(
    conn: aiomysql.Connection, q: Mapping[str, str], records: Iterable[Record]
) -> dict[str, Any]:
    """Storage.import_tables on one connection of its own."""
    it = iter(records)
    header = next(it)
    assert isinstance(header, dict)
    [lock] = await _rows(conn, q["restore_lock"])
    if lock["got"] != 1:
        raise StorageError("mysql: another restore into this database has run for 30 s")
    try:
        columns = await table_columns(conn, q, TABLES)
        backed_up = dict(header["sequences"])
        for name in backed_up:
            table, _, column = name.partition(".")
            if column and not any(c.name == column and c.identity
                                  for c in columns.get(table, ())):
                raise BackupError(f"sequence {name}: {name} is not an identity column here")
            if not column and name != FENCING_SEQUENCE:
                raise BackupError(f"sequence {name} does not exist in this database")
        # AUTO_INCREMENT counters move by DDL, which commits on its own: so before any row
        # goes in (a user without ALTER is refused here, with nothing loaded). This covers
        # ids handed out for rows deleted before the backup; explicit ids then move each
        # counter past the largest id restored, which the second call only reads.
        await _raise_counters(conn, q, backed_up, {})
        loaded, tops, fencing = await _load(conn, q, columns, it,
                                            backed_up.get(FENCING_SEQUENCE, 0))
        sequences = await _raise_counters(conn, q, backed_up, tops)
        if fencing:
            sequences[FENCING_SEQUENCE] = fencing
    finally:  # (a connection that broke has freed the lock with its session)
        with contextlib.suppress(pymysql.err.MySQLError, OSError):
            await _rows(conn, q["restore_unlock"])
    return {"tables": loaded, "sequences": dict(sorted(sequences.items()))}


async def _load(
    conn: aiomysql.Connection, q: Mapping[str, str], columns: Mapping[str, list[Column]],
    it: Iterable[Record], backed_up_fencing: int,
) -> tuple[dict[str, int], dict[str, int], int]:
    """Load the tables and move the fencing counter in one transaction. Returns: rows per
    table, the largest value of each identity column, the fencing counter as set (0: none)."""
    async with conn.cursor() as cur:
        # REPEATABLE READ: the emptiness check's locking reads lock each table's end (the
        # gap after its last row), so a writer that starts too early waits for the restore
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await cur.execute("START TRANSACTION")
    try:
        present = [t for t in DATA_TABLES if t in columns]
        busy = [t for t in present
                if await _rows(conn, f"SELECT 1 AS x FROM {ident(t)} LIMIT 1 FOR UPDATE")]
        if busy:
            raise Conflict(f"restore needs an empty database, but {', '.join(busy)} already "
                           "hold rows: restore into a new database")
        loaded, tops = await load_records(
            it, columns, lambda table, names: _Loader(conn, table, names, columns[table]))
        # the fencing counter: at least the backed-up value and every restored token
        [floor] = await _rows(conn, q["restore_fencing_floor"])
        fencing = max(backed_up_fencing, int(floor["floor"] or 0))
        if fencing > 0:
            await _rows(conn, q["restore_sequence"], {"value": fencing})
            [now] = await _rows(conn, q["fencing_sequence"])
            fencing = int(now["value"])
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return loaded, tops, fencing


async def _raise_counters(
    conn: aiomysql.Connection, q: Mapping[str, str], backed_up: Mapping[str, int],
    tops: Mapping[str, int],
) -> dict[str, int]:
    """Set each AUTO_INCREMENT counter past the larger of its backed-up value and the
    largest restored value (never lower than it is): the next id is above every restored one.
    Returns: {"table.column": the last id now counted as handed out}."""
    wanted = {n: v for n, v in backed_up.items() if n != FENCING_SEQUENCE}
    for name, top in tops.items():
        wanted[name] = max(wanted.get(name, 0), top)
    try:  # MySQL 8: see the counters as they are now
        await _rows(conn, "SET SESSION information_schema_stats_expiry = 0")
    except pymysql.err.MySQLError:
        pass
    current = {r["name"]: int(r["value"])
               for r in await _rows(conn, q["backup_sequences"], {"tables": list(TABLES)})}
    out: dict[str, int] = {}
    for name, value in sorted(wanted.items()):
        if value < 1:
            continue
        if current.get(name, 0) < value:
            table = name.partition(".")[0]
            await _rows(conn, f"ALTER TABLE {ident(table)} AUTO_INCREMENT = {int(value) + 1}")
        out[name] = max(value, current.get(name, 0))
    return out
