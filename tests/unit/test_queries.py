"""Named SQL queries: the parser, and that each backend's code and dialect file agree."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from qshared.storage.queries import load_queries, parse_queries

STORAGE = Path(str(resources.files("qshared.storage")))
DIALECTS = ("postgres", "mysql")
# A backend's modules: the main one and its helpers (backup, stats, sessions), which are
# handed the queries as `q`.
MODULES = {"postgres": ("postgres.py", "pg_*.py"), "mysql": ("mysql.py", "mysql_*.py")}

# Names only one dialect defines. Both files use one name for the same step of the same
# contract method; these are steps only one dialect has, each for a reason of its own.
POSTGRES_ONLY = {
    # enqueue: ON CONFLICT DO NOTHING returns no id; MySQL's upsert returns the first one
    "ids_by_unique_key",
    # sequences, looked up by catalog and set with setval (MySQL: AUTO_INCREMENT, DDL)
    "identity_sequence", "sequence_exists",
    # session settings that MySQL has no per-transaction form of
    "restore_lock_timeout",
    # pg_stat_statements lives in an extension's schema
    "perf_statements_schema", "perf_use_schema",
}
MYSQL_ONLY = {
    # no UPDATE/DELETE ... RETURNING: a write by primary key after the rows were locked, and
    # a read-back, where PostgreSQL's statement does it in one (with data-modifying CTEs)
    "cancel_by_ids", "hand_back_by_ids", "release_running_by_ids",
    "recover_timed_out_by_ids", "close_assignments", "close_open_assignments",
    "report_assignment", "insert_assignments", "job_states", "heartbeat_reply",
    "lock_worker", "mark_worker_failed", "worker_jobs", "delete_locks", "queue_setting",
    "get_failover_event", "acquired_lock", "renewed_lock", "close_orphans",
    "delete_gone_job_assignments", "delete_finished_jobs", "delete_assignments_of_gone_jobs",
    # a locking scan keeps every row it passed locked (delayed jobs too): a plain read of
    # the due jobs first, then pick_pending locks those by primary key
    "pick_due",
    # no sequences: the fencing counter is a row (qstack_sequences)
    "next_tokens", "fencing_sequence",
    # no LISTEN/NOTIFY: wake-ups are rows of qstack_notifications, polled
    "notify", "notify_if_changed", "notifications_since", "notifications_last",
    "notifications_cleanup",
    # session-level named locks (GET_LOCK) where PostgreSQL takes advisory locks in line
    "liveness_take", "liveness_give", "migrate_lock", "migrate_unlock", "restore_lock",
    "restore_unlock",
    # the migration bookkeeping, written in line in postgres.py
    "migrations_table", "create_migrations_table", "applied_migrations", "record_migration",
    # statistics from information_schema, performance_schema and SHOW STATUS
    "perf_index_sizes", "perf_index_usage", "perf_table_usage", "perf_table_analyzed",
    "perf_status", "perf_schema_enabled",
}


def used_names(dialect: str) -> set[str]:
    """The query names a backend's modules look up with self._q["..."] or q["..."]."""
    source = "".join(path.read_text() for pattern in MODULES[dialect]
                     for path in sorted(STORAGE.glob(pattern)))
    return set(re.findall(r"""(?:self\._q|\bq)\[\s*["']([a-z_][a-z0-9_]*)["']\s*\]""", source))


def test_parse_splits_named_blocks_and_drops_comment_lines() -> None:
    text = """-- file header, not a query

-- name: first --
-- a comment about the first query
SELECT 1
FROM t -- a trailing comment stays
WHERE x = $1

--name: second_one--
UPDATE t SET y = 2
"""
    assert parse_queries(text) == {
        "first": "SELECT 1\nFROM t -- a trailing comment stays\nWHERE x = $1",
        "second_one": "UPDATE t SET y = 2",
    }


def test_parse_rejects_a_name_defined_twice() -> None:
    text = "-- name: q --\nSELECT 1\n-- name: other --\nSELECT 2\n-- name: q --\nSELECT 3\n"
    with pytest.raises(ValueError, match="'q'"):
        parse_queries(text)


def test_parse_of_a_file_without_names_is_empty() -> None:
    assert parse_queries("-- nothing here\n") == {}


@pytest.mark.parametrize("dialect", [d for d in DIALECTS if (STORAGE / f"{d}.py").exists()])
def test_every_query_a_backend_uses_is_defined(dialect: str) -> None:
    used = used_names(dialect)
    assert used, f"found no self._q[...] lookups in {dialect}.py"
    defined = load_queries(dialect)
    assert sorted(used - set(defined)) == []
    assert all(defined[name].strip() for name in used), "an empty query body"


def test_the_postgres_dialect_is_complete() -> None:
    # the names the reference backend is known to need; guards the grep above
    assert {"enqueue", "pick_pending", "assign", "claim_assigned", "report",
            "acquire_lock"} <= used_names("postgres")


def test_both_dialects_define_the_same_names_but_the_listed_ones() -> None:
    postgres, mysql = set(load_queries("postgres")), set(load_queries("mysql"))
    assert sorted(postgres - mysql) == sorted(POSTGRES_ONLY), "name it in both files, or list it"
    assert sorted(mysql - postgres) == sorted(MYSQL_ONLY), "name it in both files, or list it"
    assert not POSTGRES_ONLY & MYSQL_ONLY


def test_the_mysql_dialect_uses_every_query_it_defines() -> None:
    assert sorted(set(load_queries("mysql")) - used_names("mysql")) == []
