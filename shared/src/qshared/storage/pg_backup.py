"""PostgreSQL's side of backup and restore: tables read in one snapshot, loaded in one
transaction with COPY, sequences carried over (the format itself is qshared.backup's)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg

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

# PostgreSQL types (format_type) by the backup format's kinds.
_KINDS = {
    "smallint": "int", "integer": "int", "bigint": "int",
    "double precision": "float", "real": "float",
    "boolean": "bool", "text": "text", "character varying": "text",
    "timestamp with time zone": "timestamp", "json": "json", "jsonb": "json",
    "bytea": "bytes",
}

def ident(name: str) -> str:
    """A quoted SQL identifier (names here come from TABLES and the catalog only)."""
    return '"' + name.replace('"', '""') + '"'


async def connect(dsn: str) -> asyncpg.Connection:
    """A connection of its own, without the pool's JSON codec: JSON columns come and go as
    their text, so a JSON `null` stays apart from SQL NULL; no command timeout either."""
    return await asyncpg.connect(dsn, timeout=30)


async def table_columns(
    conn: asyncpg.Connection, q: Mapping[str, str], tables: Iterable[str]
) -> dict[str, list[Column]]:
    """The columns of the tables that exist, in order.

    Raises:
        StorageError: a column has a type the backup format has no kind for.
    """
    out: dict[str, list[Column]] = {}
    for r in await conn.fetch(q["backup_columns"], list(tables)):
        kind = _KINDS.get(r["data_type"])
        if kind is None:
            raise StorageError(f"postgres: column {r['table_name']}.{r['column_name']} has type "
                               f"{r['data_type']}, which the backup format does not support")
        out.setdefault(r["table_name"], []).append(
            Column(r["column_name"], kind, r["is_identity"], r["pk_position"]))
    return out


# -- export ------------------------------------------------------------------------------
async def export_tables(
    conn: asyncpg.Connection, q: Mapping[str, str], write: Callable[[Record], Awaitable[None]]
) -> None:
    """Storage.export_tables on one connection."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # the first statement takes the snapshot every later one reads
        taken_at = await conn.fetchval(q["backup_now"])
        columns = await table_columns(conn, q, TABLES)
        missing = [t for t in TABLES if t not in columns]
        if missing:
            raise StorageError(f"postgres: table(s) {', '.join(missing)} do not exist: "
                               "run `qctl db migrate` first")
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {ident(t)}") for t in TABLES}
        schema = [dict(r) for r in await conn.fetch(q["backup_schema"])]
        # sequences are not transactional: read now, each is at least every value the
        # snapshot holds (they were handed out before it was taken)
        sequences = {r["name"]: r["value"]
                     for r in await conn.fetch(q["backup_sequences"], list(TABLES))
                     if r["value"] is not None}
        await write({"taken_at": taken_at, "schema": schema, "tables": counts,
                     "sequences": sequences})
        for table in TABLES:
            cols = columns[table]
            await write({"table": table, "columns": [c.name for c in cols],
                         "types": [c.kind for c in cols]})
            key = sorted((c for c in cols if c.pk_position is not None),
                         key=lambda c: c.pk_position) or cols
            cursor = await conn.cursor(
                f"SELECT {', '.join(ident(c.name) for c in cols)} FROM {ident(table)}"
                f" ORDER BY {', '.join(ident(c.name) for c in key)}"
            )
            while rows := await cursor.fetch(BATCH):
                for row in rows:
                    await write(list(row))


# -- import ------------------------------------------------------------------------------
class _Loader:
    """Copies one table's rows in batches, converting them by this database's columns."""

    def __init__(self, conn: asyncpg.Connection, schema: str, table: str,
                 names: list[str], target: list[Column]) -> None:
        by_name = {c.name: c for c in target}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise BackupError(f"table {table}: column(s) {', '.join(unknown)} do not exist "
                              "in this database's schema")
        self.conn, self.schema, self.table, self.names = conn, schema, table, names
        self.decoders = [functools.partial(decode_value, by_name[n].kind) for n in names]
        self.identities = [(i, n) for i, n in enumerate(names) if by_name[n].identity]
        self.tops: dict[str, int] = {}
        self.batch: list[tuple[Any, ...]] = []
        self.loaded = 0

    async def add(self, values: list[Any]) -> None:
        row = tuple(dec(v) for dec, v in zip(self.decoders, values, strict=True))
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
            await self.conn.copy_records_to_table(
                self.table, records=self.batch, columns=self.names, schema_name=self.schema
            )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise BackupError(f"table {self.table}: the database refused a row (one of the "
                              f"{len(self.batch)} read up to here): {exc}") from None
        self.loaded += len(self.batch)
        self.batch = []


async def import_tables(
    conn: asyncpg.Connection, q: Mapping[str, str], schema: str, records: Iterable[Record]
) -> dict[str, Any]:
    """Storage.import_tables on one connection."""
    it = iter(records)
    header = next(it)
    assert isinstance(header, dict)
    async with conn.transaction():
        await conn.execute(q["restore_lock_timeout"])
        columns = await table_columns(conn, q, TABLES)
        present = [t for t in DATA_TABLES if t in columns]
        # writers wait (a service started too early), readers do not; a second restore
        # waits, then finds rows
        if present:
            await conn.execute(
                f"LOCK TABLE {', '.join(ident(t) for t in present)} IN EXCLUSIVE MODE")
        busy = [t for t in present
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {ident(t)})")]
        if busy:
            raise Conflict(f"restore needs an empty database, but {', '.join(busy)} already "
                           "hold rows: restore into a new database or schema")
        loaded, tops = await load_records(
            it, columns, lambda table, names: _Loader(conn, schema, table, names, columns[table]))
        sequences = await _set_sequences(conn, q, columns, header["sequences"], tops)
    return {"tables": loaded, "sequences": sequences}


async def _set_sequences(
    conn: asyncpg.Connection, q: Mapping[str, str], columns: Mapping[str, list[Column]],
    backed_up: Mapping[str, int], tops: Mapping[str, int],
) -> dict[str, int]:
    """Set each sequence to the larger of its backed-up value and the largest restored value
    (never lower than it is): the next id or fencing token is above every restored one."""
    wanted = dict(backed_up)
    for name, top in tops.items():
        wanted[name] = max(wanted.get(name, 0), top)
    floor = await conn.fetchval(q["restore_fencing_floor"])
    if floor is not None:
        wanted[FENCING_SEQUENCE] = max(wanted.get(FENCING_SEQUENCE, 0), floor)
    out = {}
    for name, value in sorted(wanted.items()):
        if value < 1:
            continue
        table, _, column = name.partition(".")
        if column:
            if not any(c.name == column and c.identity for c in columns.get(table, ())):
                raise BackupError(f"sequence {name}: {name} is not an identity column here")
            sequence = await conn.fetchval(q["identity_sequence"], table, column)
        else:
            sequence = name
            if not await conn.fetchval(q["sequence_exists"], sequence):
                raise BackupError(f"sequence {name} does not exist in this database")
        out[name] = await conn.fetchval(q["restore_sequence"], sequence, value)
    return out
