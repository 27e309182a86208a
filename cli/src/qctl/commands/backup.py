"""`qctl backup` and `qctl restore`: a portable snapshot of every qstack table (direct
database access; the format is qshared.backup's)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.text import Text

from qctl import output
from qctl.database import redact, resolve_dsn, resolve_owner_dsn, with_storage
from qctl.errors import FAILED, USAGE, CliError, exit_code_for
from qctl.options import output_format, output_option
from qshared.backup import BackupError, restore_backup, write_backup
from qshared.errors import StorageError
from qshared.storage import Storage

T = TypeVar("T")

_DB_HELP = "Database URL (default: DATABASE_URL, DB_*, or the running embedded PostgreSQL)."


def _run(dsn: str, source: str, action: Callable[[Storage], Awaitable[T]]) -> T:
    """Run `action` on the database; its errors as qctl reports them."""
    try:
        return with_storage(dsn, action)
    except StorageError as exc:
        raise CliError(f"database {redact(dsn)} ({source}): {exc.message}",
                       exit_code_for(exc)) from None
    except BackupError as exc:
        raise CliError(exc.message, USAGE) from None


@contextlib.contextmanager
def _target(out: str) -> Iterator[IO[bytes]]:
    """The stream a backup goes to: standard output, or FILE written beside it under another
    name and renamed when complete (a failed backup leaves no file that looks whole)."""
    if out == "-":
        if sys.stdout.isatty():
            raise CliError("refusing to write a compressed backup to a terminal: redirect "
                           "standard output or name a file", USAGE)
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(out)
    partial = path.with_name(f".{path.name}.partial")
    try:
        stream = partial.open("wb")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}", FAILED) from None
    try:
        with stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _say(data: dict[str, Any], rows: list[dict[str, Any]], columns: list[output.Column],
         title: str, done: str, json_output: bool, stderr: bool = False) -> None:
    """The result as JSON, or as a table and a closing line; only JSON or that line, on
    stderr, when stdout carries the backup itself."""
    if stderr:
        if json_output:
            click.echo(json.dumps(data, indent=2, default=str), err=True)
        else:
            output.show(Text(done, style="green"), stderr=True)
    elif json_output:
        output.print_json(data)
    else:
        output.table(rows, columns, title=title)
        output.success(done)


@click.command("backup")
@click.option("--out", "out", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, allow_dash=True),
              help="The file to write ('-': standard output).")
@click.option("--db", metavar="URL", help=_DB_HELP)
@output_option
@click.pass_context
def backup(ctx: click.Context, out: str, db: str | None) -> None:
    """Write a consistent snapshot of every qstack table to FILE.

    The database keeps running meanwhile: everything is read in one read-only snapshot.
    The file is gzip-compressed JSON lines (the "qstack-backup" format), portable between
    database backends; `qctl restore FILE` loads it into an empty database.
    """
    dsn, source = resolve_dsn(db)
    name = "standard output" if out == "-" else out
    with _target(out) as stream:
        summary = _run(dsn, source, lambda storage: write_backup(storage, stream, name))
    counts = summary["tables"]
    rows = [{"table": t, "rows": n} for t, n in counts.items()]
    data = {"database": redact(dsn), "file": name, **summary}
    _say(data, rows, [("TABLE", "table"), ("ROWS", "rows")],
         f"backup of {redact(dsn)} ({source}), snapshot taken at {summary['taken_at']}",
         f"wrote {name}: {sum(counts.values())} rows in {len(counts)} tables, "
         f"{output.size(summary['bytes'])}",
         output_format(ctx) == "json", stderr=out == "-")


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--db", metavar="URL", help=_DB_HELP)
@output_option
@click.pass_context
def restore(ctx: click.Context, file: str, db: str | None) -> None:
    """Restore FILE, made by `qctl backup`, into an empty database.

    The database is first migrated to this version's schema; then every table is loaded in
    one transaction and the sequences are set above every restored id and fencing token.
    Refused when the database already holds data, or when the backup comes from a newer
    schema. A damaged or truncated file changes nothing (exit code 2). FILE may be '-'
    (standard input). Runs as DB_OWNER_URL when that is set (it changes the schema).
    """
    dsn, source = resolve_owner_dsn(db)
    name = "standard input" if file == "-" else file
    with contextlib.ExitStack() as stack:
        try:
            stream = sys.stdin.buffer if file == "-" else stack.enter_context(open(file, "rb"))
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}", USAGE) from None
        result = _run(dsn, source, lambda storage: restore_backup(storage, stream, name))
    header = result["header"]
    loaded = result["tables"]
    rows = [
        {"table": t, "backup": n,
         "restored": loaded.get(t, f"kept the database's {len(result['schema'])}")
         if t == "schema_migrations" else loaded.get(t, 0)}
        for t, n in header["tables"].items()
    ]
    data = {"database": redact(dsn), "file": name, "taken_at": header["taken_at"],
            "backend": header["backend"], "backup_tables": header["tables"],
            "tables": loaded, "sequences": result["sequences"],
            "schema": [m["name"] for m in result["schema"]]}
    _say(data, rows, [("TABLE", "table"), ("IN BACKUP", "backup"), ("RESTORED", "restored")],
         f"restore of {name} (taken at {header['taken_at']} from {header['backend']}) "
         f"into {redact(dsn)} ({source})",
         f"restored {sum(loaded.values())} rows in {len(loaded)} tables; sequences: "
         + (", ".join(f"{k} at {v}" for k, v in result["sequences"].items()) or "none"),
         output_format(ctx) == "json")
