"""`qctl db`: apply migrations and show which are applied (direct database access)."""

from __future__ import annotations

import click

from qctl import output
from qctl.database import migrate, migration_status, redact, resolve_dsn
from qctl.errors import FAILED, CliError, exit_code_for
from qctl.options import output_format, output_option
from qshared.errors import QstackError, StorageError

_DB_HELP = "Database URL (default: DATABASE_URL, DB_*, or the running embedded PostgreSQL)."


@click.group("db")
def db_group() -> None:
    """Database schema: `qctl db migrate`, `qctl db status`."""


@db_group.command("migrate")
@click.option("--db", metavar="URL", help=_DB_HELP)
@output_option
@click.pass_context
def db_migrate(ctx: click.Context, db: str | None) -> None:
    """Apply every pending migration (safe to run concurrently and repeatedly)."""
    dsn, source = resolve_dsn(db)
    try:
        applied = migrate(dsn)
    except StorageError as exc:
        raise CliError(f"database {redact(dsn)} ({source}): {exc.message}",
                       exit_code_for(exc)) from None
    if output_format(ctx) == "json":
        output.print_json({"database": redact(dsn), "applied": applied})
    elif applied:
        output.success(f"applied {len(applied)} migration(s) to {redact(dsn)} ({source}): "
                       + ", ".join(applied))
    else:
        output.success(f"nothing to apply: {redact(dsn)} ({source}) is up to date")


@db_group.command("status")
@click.option("--db", metavar="URL", help=_DB_HELP)
@output_option
@click.pass_context
def db_status(ctx: click.Context, db: str | None) -> None:
    """List migrations as applied or pending; exit 1 if any is pending or the db is down."""
    dsn, source = resolve_dsn(db)
    try:
        rows = migration_status(dsn)
    except QstackError as exc:
        # the specification uses db:status as a health check: unreachable is a failure (1)
        raise CliError(f"database {redact(dsn)} ({source}): {exc.message}", FAILED) from None
    for row in rows:
        row["status"] = "applied" if row.get("applied_at") else "pending"
    pending = [r for r in rows if r["status"] == "pending"]
    if output_format(ctx) == "json":
        output.print_json({"database": redact(dsn), "migrations": rows,
                           "pending": len(pending)})
    else:
        output.table(
            rows,
            [("VERSION", "version"), ("NAME", "name"), ("STATUS", "status"),
             ("APPLIED AT", "applied_at")],
            title=f"{redact(dsn)} ({source})",
        )
    if pending:
        raise CliError(f"{len(pending)} migration(s) pending: run `qctl db migrate`", FAILED)
