"""Storage contract: export_tables and import_tables through the portable backup format."""

from __future__ import annotations

import gzip
import io
import json
import time
from typing import Any

import asyncpg
import pytest
from backends import catalog

from qshared.backup import BackupError, BackupReader, restore_backup, write_backup
from qshared.errors import Conflict
from qshared.storage.base import JOB_STATES, TABLES, Storage

PAYLOADS = [
    {"n": 1, "text": "naïve ☃ \"quoted\"\nline"}, None, [], "a string", 12345678901234567,
    0.0025, {"$json": 5}, {"$json": None, "other": 1}, {"nested": {"deep": [1, {"x": None}]}},
]


async def dump(storage: Storage) -> tuple[dict[str, Any], dict[str, dict[str, Any]], bytes]:
    """A backup of `storage`: its header, per table {columns, types, rows}, and the file."""
    buf = io.BytesIO()
    await write_backup(storage, buf)
    data = buf.getvalue()
    reader = BackupReader(io.BytesIO(data), "dump")
    tables: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for record in list(reader.records())[1:]:
        if isinstance(record, dict):
            current = tables[record["table"]] = {**record, "rows": []}
        else:
            current["rows"].append(record)
    return reader.header, tables, data


async def populate(storage: Storage, make_job, add_worker, assign, outcome) -> dict[str, int]:
    """Every table gets rows, jobs in every state; returns a job id per state."""
    await add_worker(id="w1", queues=["default"])
    await add_worker(id="w2", queues=["default", "emails"])
    await storage.set_worker_status("w2", "draining")
    await storage.heartbeat("w1", {"status": "healthy", "cpu_percent": 12.5, "memory_bytes": 2**40,
                                   "in_flight": 3, "loop_lag_ms": 0.25,
                                   "details": {"sent_at": time.time(), "note": None}})
    await storage.heartbeat("w2", {"status": "degraded", "details": None})

    ids: dict[str, int] = {}
    jobs = [make_job(payload=p) for p in PAYLOADS]
    jobs += [make_job(unique_key="once", lock_key="mutex-a", priority=-5, timeout=0.5),
             make_job(queue_name="emails", delay_s=3600, max_attempts=7)]
    created = [e.id for e in await storage.enqueue(jobs)]
    ids["pending"], ids["scheduled"] = created[0], created[-1]

    # six to w1: one stays assigned, the others run and end their own way
    more = [e.id for e in await storage.enqueue([make_job(payload={"k": i}) for i in range(6)])]
    assigned = await assign("w1", limit=100)
    assert set(more) <= set(assigned)
    started = [(j, (await storage.get_job(j))["token"], time.time()) for j in more[1:]]
    assert await storage.mark_running(started) == set(more[1:])
    ids["assigned"], ids["running"] = more[0], more[1]
    ids["succeeded"], ids["succeeded_null"], ids["dead"], ids["retried"] = more[2:]
    now = time.time()
    await storage.report([
        await outcome(ids["succeeded"], "succeeded", finished=now,
                      result_json=json.dumps({"ok": [1, 2.5, "é"]})),
        await outcome(ids["succeeded_null"], "succeeded", finished=now, result_json="null"),
        await outcome(ids["dead"], "dead", finished=now, error="boom\ttraceback"),
        await outcome(ids["retried"], "pending", finished=now, error="try again", retry_in=60),
    ])
    cancelled = [e.id for e in await storage.enqueue([make_job()])]
    assert await storage.cancel_job(cancelled[0])
    ids["cancelled"] = cancelled[0]
    states = {(await storage.get_job(i))["status"] for i in ids.values()}
    assert states == set(JOB_STATES)

    await storage.acquire_lock("leader:scheduler", "scheduler-1", 30)
    await storage.acquire_lock("job-lock", "w1", 60, worker_id="w1")
    await storage.record_failover_event("guard_held", None, {"why": "test", "n": [1, None]})
    await storage.recover_worker("w2", reason="test", event_type="worker_crashed",
                                 quarantine_after=3, details={"detected_by": "test"})
    await storage.cached_snapshot("metrics", 60, _snapshot_body)
    await storage.set_queue_paused("emails", True)
    await storage.set_queue_paused("default", False)
    return ids


async def _snapshot_body() -> bytes:
    return bytes(range(256)) + b"\x00end"


async def pg_rows(url: str, table: str) -> list[dict[str, Any]]:
    """A PostgreSQL table as it is stored (JSON as its text), by primary key."""
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1")]
    finally:
        await conn.close()


async def counts(storage: Storage) -> dict[str, int]:
    header, _, _ = await dump(storage)
    return header["tables"]


# -- the table list ----------------------------------------------------------------------
async def test_the_table_list_is_every_table_the_migrations_create(
    storage: Storage, backend: str, db_url: str
) -> None:
    tables, _ = await catalog(backend, db_url)
    assert set(TABLES) == tables, "a migration added or dropped a table: update TABLES"
    assert len(set(TABLES)) == len(TABLES)


# -- round trip --------------------------------------------------------------------------
async def test_every_table_round_trips_exactly(
    storage: Storage, unmigrated_storage: Storage, backend: str, db_url: str,
    db_url_unmigrated: str, make_job, add_worker, assign, outcome,
) -> None:
    ids = await populate(storage, make_job, add_worker, assign, outcome)
    if backend == "postgres":  # values JSON cannot spell: the format's own spellings
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("UPDATE worker_health_checks SET loop_lag_ms = 'Infinity',"
                               " cpu_percent = '-Infinity' WHERE worker_id = 'w2'")
        finally:
            await conn.close()
    header, before, data = await dump(storage)
    assert set(before) == set(TABLES) == set(header["tables"])
    assert all(len(before[t]["rows"]) == n for t, n in header["tables"].items())
    assert all(header["tables"][t] > 0 for t in TABLES), header["tables"]

    result = await restore_backup(unmigrated_storage, io.BytesIO(data), "round-trip")
    assert result["tables"] == {t: n for t, n in header["tables"].items()
                                if t != "schema_migrations"}
    _, after, _ = await dump(unmigrated_storage)
    for table in TABLES:
        if table == "schema_migrations":  # the target's own, applied just now
            assert [r[:2] for r in after[table]["rows"]] == [r[:2] for r in before[table]["rows"]]
            continue
        assert after[table]["columns"] == before[table]["columns"], table
        assert after[table]["rows"] == before[table]["rows"], table

    for state, job_id in ids.items():
        assert await unmigrated_storage.get_job(job_id) == await storage.get_job(job_id), state
    assert (await unmigrated_storage.get_worker("w2"))["status"] == "failed"
    assert await unmigrated_storage.list_queues() == await storage.list_queues()
    snapshot = await unmigrated_storage.cached_snapshot("metrics", 3600, _snapshot_body)
    assert snapshot == await _snapshot_body()
    if backend == "postgres":  # stored exactly, JSON null apart from SQL NULL
        for table in (t for t in TABLES if t != "schema_migrations"):
            assert await pg_rows(db_url_unmigrated, table) == await pg_rows(db_url, table), table
        jobs = {r["id"]: r for r in await pg_rows(db_url_unmigrated, "jobs")}
        assert jobs[ids["succeeded_null"]]["result"] == "null"
        assert jobs[ids["pending"]]["result"] is None
        payloads = [json.loads(jobs[i]["payload"]) for i in range(ids["pending"],
                                                                   ids["pending"] + len(PAYLOADS))]
        assert payloads == PAYLOADS


async def test_a_table_bigger_than_a_batch_streams_in_order(
    storage: Storage, unmigrated_storage: Storage, make_job
) -> None:
    for _ in range(3):
        await storage.enqueue([make_job() for _ in range(1500)])
    header, tables, data = await dump(storage)
    assert header["tables"]["jobs"] == 4500
    assert [r[0] for r in tables["jobs"]["rows"]] == list(range(1, 4501))
    result = await restore_backup(unmigrated_storage, io.BytesIO(data), "big")
    assert result["tables"]["jobs"] == 4500
    assert (await counts(unmigrated_storage))["jobs"] == 4500


async def test_a_backup_of_an_older_schema_restores_with_the_new_columns_defaulted(
    storage: Storage, unmigrated_storage: Storage, make_job
) -> None:
    [job] = await storage.enqueue([make_job()])
    _, _, data = await dump(storage)
    lines = [json.loads(x) for x in gzip.decompress(data).splitlines()]
    # as if made before migration 0002 (which added jobs.crash_count)
    lines[0]["schema"] = [m for m in lines[0]["schema"] if m["version"] < 2]
    i = next(n for n, x in enumerate(lines) if isinstance(x, dict) and x.get("table") == "jobs")
    drop = lines[i]["columns"].index("crash_count")
    for x in (lines[i]["columns"], lines[i]["types"], lines[i + 1]):
        del x[drop]
    older = gzip.compress(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    result = await restore_backup(unmigrated_storage, io.BytesIO(older), "older.qsb")
    assert result["tables"]["jobs"] == 1
    restored = await unmigrated_storage.get_job(job.id)
    assert restored["crash_count"] == 0
    assert {k: v for k, v in restored.items() if k != "crash_count"} == {
        k: v for k, v in (await storage.get_job(job.id)).items() if k != "crash_count"}


# -- sequences ---------------------------------------------------------------------------
async def test_ids_and_fencing_tokens_continue_above_the_backed_up_values(
    storage: Storage, unmigrated_storage: Storage, backend: str, db_url: str,
    make_job, add_worker, assign,
) -> None:
    await add_worker(id="w1")
    ids = [e.id for e in await storage.enqueue([make_job() for _ in range(5)])]
    await assign("w1")
    first = await storage.acquire_lock("k", "me", 30)
    assert first is not None
    await storage.release_lock("k", "me", first[0])
    if backend == "postgres":  # the newest job and lock are gone: the sequences are ahead
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("DELETE FROM jobs WHERE id = $1", ids[-1])
        finally:
            await conn.close()
    header, tables, data = await dump(storage)
    top_token = max(r for t in ("jobs", "job_assignments", "distributed_locks")
                    for r in _column(tables[t], "token") if r is not None)
    assert header["sequences"]["jobs.id"] == ids[-1]
    assert header["sequences"]["qstack_fencing_seq"] >= first[0] > top_token

    result = await restore_backup(unmigrated_storage, io.BytesIO(data), "seq")
    assert result["sequences"]["jobs.id"] == ids[-1]
    [new] = await unmigrated_storage.enqueue([make_job()])
    assert new.id == ids[-1] + 1
    token, _ = await unmigrated_storage.acquire_lock("k", "me", 30)
    assert token > header["sequences"]["qstack_fencing_seq"]
    await unmigrated_storage.register_worker({"id": "w9", "hostname": "h", "pid": 1,
                                              "queues": ["default"], "concurrency": 1})
    pairs = await unmigrated_storage.dispatch(
        ["w9"], {"default": 10}, lambda jobs: [(j.id, "w9") for j in jobs])
    assert pairs
    for job_id, _ in pairs:
        assert (await unmigrated_storage.get_job(job_id))["token"] > token


def _column(table: dict[str, Any], name: str) -> list[Any]:
    i = table["columns"].index(name)
    return [r[i] for r in table["rows"]]


# -- refusals and damaged files ----------------------------------------------------------
async def test_restore_into_a_database_with_data_is_refused_and_changes_nothing(
    storage: Storage, make_job
) -> None:
    await storage.enqueue([make_job() for _ in range(3)])
    header, _, data = await dump(storage)
    with pytest.raises(Conflict, match=r"empty database.*jobs"):
        await restore_backup(storage, io.BytesIO(data), "busy")
    assert await counts(storage) == header["tables"]


async def test_restore_refuses_a_backup_of_a_newer_schema(
    storage: Storage, unmigrated_storage: Storage
) -> None:
    _, _, data = await dump(storage)
    lines = gzip.decompress(data).splitlines(keepends=True)
    head = json.loads(lines[0])
    head["schema"].append({"version": 9999, "name": "9999_from_the_future"})
    newer = gzip.compress(json.dumps(head).encode() + b"\n" + b"".join(lines[1:]))
    with pytest.raises(Conflict, match=r"newer schema.*9999_from_the_future"):
        await restore_backup(unmigrated_storage, io.BytesIO(newer), "newer.qsb")
    # refused before anything was done: not even migrated
    status = await unmigrated_storage.migration_status()
    assert all(m["applied_at"] is None for m in status)


def _damage(data: bytes, how: str) -> bytes:
    lines = gzip.decompress(data).splitlines(keepends=True)
    if how == "truncated":
        return data[: len(data) * 2 // 3]
    if how == "cut at a line":  # a whole gzip stream that ends early, at a line boundary
        return gzip.compress(b"".join(lines[:-1]))
    if how == "bad row":
        return gzip.compress(b"".join([*lines[:-3], b'[1, "x"]\n', *lines[-2:]]))
    if how == "bad json":
        return gzip.compress(b"".join([*lines[:-3], b'[1, "x"\n', *lines[-2:]]))
    if how == "not gzip":
        return b"".join(lines)
    if how == "not a backup":
        return gzip.compress(b'{"hello": "world"}\n')
    if how in ("bad value", "bad state"):  # in the first job
        i = next(n for n, ln in enumerate(lines) if ln.startswith(b'{"table":"jobs"'))
        columns, row = json.loads(lines[i])["columns"], json.loads(lines[i + 1])
        if how == "bad value":  # a timestamp that is not one
            row[columns.index("run_at")] = "yesterday"
        else:  # a value the type allows and the schema does not
            row[columns.index("status")] = "exploded"
        return gzip.compress(b"".join([*lines[:i + 1], json.dumps(row).encode() + b"\n", *lines[i + 2:]]))
    raise ValueError(how)


@pytest.mark.parametrize("how, message", [
    ("truncated", r"line \d+: (the file is cut short|the line is cut short)"),
    ("cut at a line", r"line \d+: table \w+ has \d+ rows, the header says \d+"),
    ("bad row", r"line \d+: table \w+: a row of 2 values"),
    ("bad json", r"line \d+: not a JSON line \(unexpected end of data at character \d+\)"),
    ("not gzip", r"line 1\b|not gzip-compressed"),
    ("not a backup", r"line 1: not a qstack backup"),
    ("bad value", r"line \d+: bad timestamp value 'yesterday'"),
    ("bad state", r"line \d+: table jobs: the database refused a row .*check constraint"),
])
async def test_a_damaged_file_fails_naming_file_and_line_and_leaves_the_target_empty(
    storage: Storage, unmigrated_storage: Storage, make_job, add_worker, assign, outcome,
    how: str, message: str,
) -> None:
    await populate(storage, make_job, add_worker, assign, outcome)
    await storage.enqueue([make_job() for _ in range(3000)])  # the jobs span several batches
    _, _, data = await dump(storage)
    with pytest.raises(BackupError, match=message) as caught:
        await restore_backup(unmigrated_storage, io.BytesIO(_damage(data, how)), "damaged.qsb")
    assert str(caught.value).startswith("damaged.qsb: ")
    assert caught.value.line is not None or how == "not gzip"
    if how not in ("not gzip", "not a backup"):  # migrated, loaded nothing
        left = await counts(unmigrated_storage)
        assert {t: n for t, n in left.items() if t != "schema_migrations"} == {
            t: 0 for t in TABLES if t != "schema_migrations"}
