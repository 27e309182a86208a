"""The portable backup format "qstack-backup" (version 1), free of any database dialect.

A backup is a gzip-compressed file of JSON lines:

1. a header: {"format": "qstack-backup", "version": 1, "backend": "postgres", "taken_at":
   ISO-8601, "schema": [{"version", "name"}...], "tables": {table: rows},
   "sequences": {name: last value handed out}};
2. per table a line {"table": name, "columns": [...], "types": [...]} followed by one JSON
   array per row, in the columns' order.

Values are written by their portable type (`KINDS`): numbers as numbers (a non-finite float
as "NaN", "Infinity" or "-Infinity"), text as strings, booleans as booleans, timestamps as
ISO-8601 strings with their offset, bytes as base64, JSON columns as the JSON value itself,
SQL NULL as null. A JSON column's own `null`, and an object whose only key is "$json", are
wrapped as {"$json": value} so that they stay apart from SQL NULL. A backend reads the
values back by its own column types, so a backup of one backend restores into another.
"""

from __future__ import annotations

import base64
import gzip
import math
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import orjson

from qshared.errors import Conflict, QstackError, ValidationFailed
from qshared.storage.base import TABLES, Storage

FORMAT = "qstack-backup"
VERSION = 1
KINDS = ("int", "float", "bool", "text", "timestamp", "json", "bytes")
# Tables a restore loads; schema_migrations stays the target's own.
DATA_TABLES = tuple(t for t in TABLES if t != "schema_migrations")
BATCH = 2000  # rows read, or loaded, at a time: a big table never sits in memory whole
# The header's name for the fencing-token counter (PostgreSQL's sequence of that name,
# MySQL's qstack_sequences row), beside "table.column" for the identity columns.
FENCING_SEQUENCE = "qstack_fencing_seq"

_WRAP = "$json"
_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class BackupError(ValidationFailed):
    """The file is not a qstack backup this version can read, or a value does not fit."""

    code = "bad_backup"

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.detail, self.source, self.line = message, source, line
        where = ": ".join(p for p in (source, f"line {line}" if line else None) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, source: str, line: int | None) -> BackupError:
        """The same error naming the file and line (those it names already are kept)."""
        return BackupError(self.detail, source=self.source or source, line=self.line or line)


# -- values ------------------------------------------------------------------------------
def encode_value(kind: str, value: Any) -> Any:
    """A backend's value (see Storage.export_tables) as the portable JSON value of `kind`."""
    if value is None:
        return None
    if kind == "json":
        # the column's JSON text goes into the line as it is, unless it must be wrapped
        if value == "null" or _WRAP in value:
            parsed = orjson.loads(value)
            if parsed is None or (isinstance(parsed, dict) and list(parsed) == [_WRAP]):
                return {_WRAP: parsed}
        return orjson.Fragment(value)
    if kind == "timestamp":
        if value.tzinfo is None:  # a backend that keeps UTC without an offset
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return value
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def decode_value(kind: str, value: Any) -> Any:
    """A portable value as the plain value of a column of `kind`: int, float, bool, str,
    an aware datetime, bytes, or the JSON text of a json column; None for SQL NULL.

    Raises:
        BackupError: the value does not fit the kind.
    """
    if value is None:
        return None
    try:
        if kind == "json":
            if isinstance(value, dict) and list(value) == [_WRAP]:
                value = value[_WRAP]
            return orjson.dumps(value).decode()
        if kind == "text":
            if isinstance(value, str):
                return value
        elif kind == "int":
            if isinstance(value, int):
                return int(value)
        elif kind == "float":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if value in _FLOATS:
                return _FLOATS[value]
        elif kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):  # a backend without booleans
                return bool(value)
        elif kind == "timestamp":
            if isinstance(value, str):
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    raise BackupError(f"timestamp {value!r} has no time zone")
                return parsed
        elif kind == "bytes":
            if isinstance(value, str):
                return base64.b64decode(value, validate=True)
        else:
            raise BackupError(f"unknown column type {kind!r}")
    except (ValueError, TypeError, orjson.JSONEncodeError) as exc:
        raise BackupError(f"bad {kind} value {_short(value)}: {exc}") from None
    raise BackupError(f"bad {kind} value {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- writing -----------------------------------------------------------------------------
class _Counted:
    """A binary stream that counts the bytes written through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.written = stream, 0

    def write(self, data: bytes) -> int:
        self.stream.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        self.stream.flush()


class BackupWriter:
    """Turns Storage.export_tables' records into the file's lines (the `write` it is given)."""

    def __init__(self, stream: IO[bytes], backend: str, target: str = "backup") -> None:
        self._out = _Counted(stream)
        self._gz = gzip.GzipFile(fileobj=self._out, mode="wb", compresslevel=6, mtime=0)
        self._backend, self._target = backend, target
        self._kinds: Sequence[str] = ()
        self.header: dict[str, Any] | None = None

    async def __call__(self, record: dict[str, Any] | list[Any]) -> None:
        if isinstance(record, list):
            line = [encode_value(k, v) for k, v in zip(self._kinds, record, strict=True)]
        elif "table" in record:
            self._kinds = record["types"]
            line = record
        else:
            line = self.header = {
                "format": FORMAT, "version": VERSION, "backend": self._backend,
                "taken_at": encode_value("timestamp", record["taken_at"]),
                "schema": record["schema"], "tables": record["tables"],
                "sequences": record["sequences"],
            }
        self._write(orjson.dumps(line) + b"\n")

    def _write(self, data: bytes) -> None:
        try:
            self._gz.write(data)
        except OSError as exc:
            # not from exc: an OSError cause would read as "database unreachable"
            raise QstackError(f"cannot write {self._target}: {exc}") from None

    def close(self) -> int:
        """End the gzip stream. Returns: the bytes written."""
        try:
            self._gz.close()
            self._out.flush()
        except OSError as exc:
            raise QstackError(f"cannot write {self._target}: {exc}") from None
        return self._out.written


async def write_backup(
    storage: Storage, stream: IO[bytes], target: str = "backup"
) -> dict[str, Any]:
    """Write a backup of `storage` to `stream` (left open).

    Returns:
        The header written, plus `bytes`: the size of the compressed file.
    """
    writer = BackupWriter(stream, storage.dialect, target)
    await storage.export_tables(writer)
    size = writer.close()
    assert writer.header is not None
    return {**writer.header, "bytes": size}


# -- reading -----------------------------------------------------------------------------
class BackupReader:
    """Reads and checks a backup line by line; `line` is the number of the last line read."""

    def __init__(self, stream: IO[bytes], source: str) -> None:
        self.source = source
        self.line = 0
        self._lines = self._read_lines(gzip.GzipFile(fileobj=stream, mode="rb"))
        self.header = self._header()

    def error(self, message: str) -> BackupError:
        return BackupError(message, source=self.source, line=self.line or None)

    def _read_lines(self, gz: gzip.GzipFile) -> Iterator[Any]:
        while True:
            try:
                raw = gz.readline()
            except gzip.BadGzipFile as exc:
                if self.line == 0:
                    raise self.error("not a qstack backup (not gzip-compressed)") from None
                self.line += 1
                raise self.error(f"the file is damaged ({exc})") from None
            except (EOFError, zlib.error) as exc:
                self.line += 1
                raise self.error(f"the file is cut short or damaged ({exc})") from None
            except OSError as exc:
                raise self.error(f"cannot read: {exc}") from None
            if not raw:
                return
            self.line += 1
            if not raw.endswith(b"\n"):
                raise self.error("the line is cut short (the file is truncated)")
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise self.error(f"not a JSON line ({exc.msg} at character {exc.pos + 1})") from None

    def _header(self) -> dict[str, Any]:
        head = next(self._lines, None)
        if head is None:
            raise self.error("the file is empty")
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise self.error(f"not a qstack backup (no {FORMAT!r} header)")
        version = head.get("version")
        if version != VERSION:
            raise self.error(f"format version {version!r}: this qctl reads version {VERSION} "
                             "(a newer qctl made it?)")
        checks = {
            "backend": isinstance(head.get("backend"), str),
            "taken_at": isinstance(head.get("taken_at"), str),
            "schema": isinstance(head.get("schema"), list) and all(
                isinstance(m, dict) and isinstance(m.get("version"), int)
                and isinstance(m.get("name"), str) for m in head["schema"]),
            "tables": _counts(head.get("tables")),
            "sequences": _counts(head.get("sequences")),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise self.error(f"the header's {', '.join(bad)} is missing or malformed")
        unknown = sorted(set(head["tables"]) - set(TABLES))
        if unknown:
            raise self.error(f"unknown table(s) {', '.join(unknown)} in the header")
        return head

    def records(self) -> Iterator[dict[str, Any] | list[Any]]:
        """The header, then per table its line and rows (portable values), checked as they
        come: a row's width, the tables the header names, each table's row count."""
        yield self.header
        expected: Mapping[str, int] = self.header["tables"]
        table, width, rows, seen = None, 0, 0, set()
        for record in self._lines:
            if isinstance(record, list):
                if table is None:
                    raise self.error("a row before any table line")
                if len(record) != width:
                    raise self.error(f"table {table}: a row of {len(record)} values, "
                                     f"{width} columns")
                rows += 1
                yield record
                continue
            if not isinstance(record, dict) or not isinstance(record.get("table"), str):
                raise self.error("expected a table line or a row")
            if table is not None:
                self._check_count(table, rows, expected)
            table, rows = record["table"], 0
            columns, types = record.get("columns"), record.get("types")
            if table not in expected:
                raise self.error(f"table {table!r} is not in the header")
            if table in seen:
                raise self.error(f"table {table} appears twice")
            seen.add(table)
            if (not isinstance(columns, list) or not columns
                    or not all(isinstance(c, str) for c in columns)
                    or not isinstance(types, list) or len(types) != len(columns)
                    or not all(t in KINDS for t in types)):
                raise self.error(f"table {table}: bad columns or types")
            width = len(columns)
            yield record
        if table is not None:
            self._check_count(table, rows, expected)
        missing = sorted(set(expected) - seen)
        if missing:
            raise self.error(f"the file ends before table(s) {', '.join(missing)} "
                             "(it is truncated)")

    def _check_count(self, table: str, rows: int, expected: Mapping[str, int]) -> None:
        if rows != expected[table]:
            raise self.error(f"table {table} has {rows} rows, the header says "
                             f"{expected[table]} (the file is truncated or damaged)")


def _counts(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items())


async def restore_backup(storage: Storage, stream: IO[bytes], source: str) -> dict[str, Any]:
    """Restore a backup into an empty database: check the header, migrate the database to
    this version's schema, then load every table and set the sequences in one transaction.

    Returns:
        `tables` {table: rows loaded}, `sequences` {name: value set}, `schema` (the
        migrations now applied) and the backup's `header`.
    Raises:
        BackupError: the file is not a valid backup (naming the file and line).
        Conflict: the backup's schema is newer than this version's, or the database holds
            data.
        StorageError: the database failed.
    """
    reader = BackupReader(stream, source)
    header = reader.header
    known = {(m["version"], m["name"]) for m in await storage.migration_status()}
    newer = [m for m in header["schema"] if (m["version"], m["name"]) not in known]
    if newer:
        names = ", ".join(f"{m['version']:04d} {m['name']}" for m in newer)
        raise Conflict(f"{source} was taken with a newer schema (migration(s) {names} are "
                       "unknown here): restore it with the qstack version that made it")
    await storage.migrate()
    try:
        loaded = await storage.import_tables(reader.records())
    except BackupError as exc:
        raise exc.at(source, reader.line) from None
    schema = [m for m in await storage.migration_status() if m["applied_at"] is not None]
    return {**loaded, "schema": schema, "header": header}


Record = dict[str, Any] | list[Any]  # a backup line: a header or table dict, or a row


@dataclass(slots=True)
class Column:
    """One column of a table in a database: its name, backup kind, whether its values come
    from an identity (AUTO_INCREMENT) counter, and its place in the primary key."""

    name: str
    kind: str
    identity: bool
    pk_position: int | None


class TableLoader(Protocol):
    """A backend's loader of one table's rows (batched)."""

    table: str
    loaded: int
    tops: dict[str, int]  # the largest value of each identity column loaded

    async def add(self, row: list[Any]) -> None: ...

    async def flush(self) -> None: ...


async def load_records(
    records: Iterable[dict[str, Any] | list[Any]], tables: Collection[str],
    make_loader: Callable[[str, list[str]], TableLoader],
) -> tuple[dict[str, int], dict[str, int]]:
    """Feed a backup's table records (after its header) to one loader per table.

    schema_migrations rows are skipped (the target keeps its own: it was just migrated).
    Returns:
        ({table: rows loaded}, {"table.column": largest identity value loaded}).
    Raises:
        BackupError: a table this database does not have.
    """
    loaded: dict[str, int] = {}
    tops: dict[str, int] = {}
    loader: TableLoader | None = None

    async def finish() -> None:
        if loader is not None:
            await loader.flush()
            loaded[loader.table] = loader.loaded
            tops.update({f"{loader.table}.{n}": v for n, v in loader.tops.items()})

    for record in records:
        if isinstance(record, list):
            if loader is not None:
                await loader.add(record)
            continue
        await finish()
        table = record["table"]
        if table == "schema_migrations":
            loader = None
            continue
        if table not in tables:
            raise BackupError(f"table {table} does not exist in this database")
        loader = make_loader(table, record["columns"])
    await finish()
    return loaded, tops
