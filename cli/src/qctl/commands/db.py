"""`qctl db`: apply migrations, show which are applied, and the database's performance
statistics (direct database access)."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from qctl import output
from qctl.database import (
    migrate,
    migration_status,
    redact,
    resolve_dsn,
    resolve_owner_dsn,
    with_storage,
)
from qctl.errors import FAILED, UNREACHABLE, CliError, exit_code_for
from qctl.options import output_format, output_option
from qshared.errors import QstackError, StorageError

_DB_HELP = "Database URL (default: DATABASE_URL, DB_*, or the running embedded PostgreSQL)."


@click.group("db")
def db_group() -> None:
    """Database schema and health: migrate, status, performance-stats."""


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, StorageError) and exit_code_for(exc) == UNREACHABLE


@db_group.command("migrate")
@click.option("--db", metavar="URL", help=_DB_HELP)
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=0, show_default=True,
              metavar="SECONDS",
              help="Keep trying this long while the database does not answer yet (a "
                   "container starting beside it); other errors fail at once.")
@output_option
@click.pass_context
def db_migrate(ctx: click.Context, db: str | None, wait_s: float) -> None:
    """Apply every pending migration (safe to run concurrently and repeatedly).

    Runs as DB_OWNER_URL when that is set (the schema's owner), else as the services do.
    """
    dsn, source = resolve_owner_dsn(db)
    attempts = Retrying(stop=stop_after_delay(wait_s), wait=wait_fixed(1),
                        retry=retry_if_exception(_unreachable), reraise=True)
    try:
        applied = attempts(migrate, dsn)
    except StorageError as exc:
        waited = f" (still unreachable after {wait_s:g}s)" if wait_s and _unreachable(exc) else ""
        raise CliError(f"database {redact(dsn)} ({source}): {exc.message}{waited}",
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


@db_group.command("performance-stats")
@click.option("--db", metavar="URL", help=_DB_HELP)
@output_option
@click.pass_context
def db_performance_stats(ctx: click.Context, db: str | None) -> None:
    """Check database performance: server, qstack tables and indexes, slowest statements
    (pg_stat_statements, when installed) and the round-trip latency."""
    dsn, source = resolve_dsn(db)
    try:
        stats = with_storage(dsn, lambda storage: storage.performance_stats())
    except StorageError as exc:
        raise CliError(f"database {redact(dsn)} ({source}): {exc.message}",
                       exit_code_for(exc)) from None
    if output_format(ctx) == "json":
        output.print_json({"database": redact(dsn), **stats})
        return
    s, lat = stats["server"], stats["latency_ms"]
    hit = s["cache_hit_ratio"]
    output.fields({
        "version": s["version"], "database": f"{s['database']} (schema {s['schema']})",
        "size": output.size(s["database_bytes"]),
        "connections": f"{s['connections']} of {s['max_connections']} "
                       f"({s['database_connections']} to this database)",
        "cache hit ratio": "-" if hit is None else f"{hit * 100:.2f}%",
        "transactions": f"{s['commits']} committed, {s['rollbacks']} rolled back",
        "deadlocks": s["deadlocks"],
        "temp files": f"{s['temp_files']} ({output.size(s['temp_bytes'])})",
        "round trip": f"median {lat['median']:.2f}ms, max {lat['max']:.2f}ms "
                      f"({lat['samples']} x SELECT 1)",
    }, title=f"{redact(dsn)} ({source})")
    now = datetime.now(UTC)

    def ago(*stamps: datetime | None) -> str:
        latest = max((t for t in stamps if t is not None), default=None)
        return "never" if latest is None else output.age((now - latest).total_seconds()) + " ago"

    output.table(stats["tables"], [
        ("TABLE", "table"), ("EST. ROWS", "estimated_rows"),
        ("SIZE", lambda r: output.size(r["total_bytes"])), ("SEQ SCANS", "seq_scan"),
        ("IDX SCANS", "idx_scan"), ("DEAD ROWS", "dead_rows"),
        ("VACUUMED", lambda r: ago(r["last_vacuum"], r["last_autovacuum"])),
        ("ANALYZED", lambda r: ago(r["last_analyze"], r["last_autoanalyze"])),
    ], title="tables")
    output.table(stats["indexes"], [
        ("TABLE", "table"), ("INDEX", "index"), ("SCANS", "scans"),
        ("SIZE", lambda r: output.size(r["size_bytes"])),
    ], title="indexes")
    statements = stats["statements"]
    if statements["available"]:
        output.table(statements["rows"], [
            ("MEAN MS", "mean_ms"), ("MAX MS", "max_ms"), ("CALLS", "calls"),
            ("TOTAL MS", "total_ms"), ("QUERY", lambda r: " ".join(r["query"].split())[:100]),
        ], title="slowest statements (pg_stat_statements)", empty="no statements recorded")
    else:
        output.warn(statements["note"])
