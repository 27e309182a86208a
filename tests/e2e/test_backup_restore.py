"""The issue's acceptance test: backup during a load, wipe, restore into an empty database:
every job is there with its state, and the restored stack finishes the pending ones. Also
`qctl db performance-stats` against the live schema."""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_helpers import Db, qctl_runner, wait_until
from stack_fixtures import held_place, on_each_database

from qshared.backup import BackupReader, encode_value
from qshared.client import job_body

pytestmark = [pytest.mark.e2e, on_each_database]

FAST = {"WORKER_HEALTH_CHECK_INTERVAL": "1", "WORKER_REGISTRATION_TTL": "4"}
UNFINISHED = ("pending", "assigned", "running")


@pytest.fixture(scope="module")
def empty_url(e2e_backend: str, e2e_server_dsn: str) -> Iterator[str]:
    """A second schema (PostgreSQL) or database (MySQL) of this module's, on its backend,
    empty (not even migrated): where the backup goes."""
    with held_place(e2e_backend, e2e_server_dsn, migrate=False) as url:
        yield url


@pytest.fixture(scope="module")
def qctl(tmp_path_factory: pytest.TempPathFactory):
    """qctl(*args, code=0) -> the finished `qctl args...` process (no context, no env DB)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("DB_")}
    env.update(QSTACK_CONFIG_DIR=str(tmp_path_factory.mktemp("qctl-config")), COLUMNS="250")
    return qctl_runner(env)


class Producer(threading.Thread):
    """Enqueues a mix of jobs until stopped: quick ones, sleepers, delayed ones, failures,
    and cancels some delayed ones. `ids` holds every id the scheduler gave back."""

    def __init__(self, stack: Any) -> None:
        super().__init__(name="producer", daemon=True)
        self.stack, self.ids, self.error = stack, [], None
        self.lock, self.halt = threading.Lock(), threading.Event()

    def run(self) -> None:
        rnd = random.Random(6)
        try:
            with self.stack.client() as client:
                for n in itertools.count():
                    if self.halt.is_set():
                        return
                    batch = [
                        job_body("noop", {"n": n}, max_attempts=3),
                        job_body("echo", {"n": n, "text": "ünïcode", "list": [1, None, 2.5]},
                                 queue="emails", max_attempts=3),
                        job_body("sleep", {"seconds": round(rnd.uniform(0.2, 0.8), 2)},
                                 max_attempts=3),
                        job_body("noop", None, delay_s=round(rnd.uniform(2, 5), 2),
                                 max_attempts=3, priority=rnd.randint(-5, 5)),
                    ]
                    if n % 5 == 0:
                        batch.append(job_body("fail", {"message": "on purpose"}, max_attempts=1))
                    ids = client.enqueue_many(batch)
                    if n % 7 == 0:
                        client.cancel(ids[3])  # a delayed one: still pending
                    with self.lock:
                        self.ids.extend(ids)
                    time.sleep(0.15)
        except Exception as exc:  # reported by the test
            self.error = exc

    def taken(self) -> list[int]:
        with self.lock:
            return list(self.ids)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def read_backup(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The backup's header and per table {columns, types, rows}."""
    with path.open("rb") as f:
        reader = BackupReader(f, str(path))
        tables: dict[str, dict[str, Any]] = {}
        current: dict[str, Any] = {}
        for record in itertools.islice(reader.records(), 1, None):
            if isinstance(record, dict):
                current = tables[record["table"]] = {**record, "rows": []}
            else:
                current["rows"].append(record)
    return reader.header, tables


def as_dicts(table: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["rows"]}


def portable(db: Db, table: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """The database's rows of `table` as the backup spells them (so equal means equal)."""
    name = table["table"]
    out = {}
    for row in db.fetch(f"SELECT * FROM {name}"):
        encoded = [encode_value(k, row[c]) for c, k in zip(table["columns"], table["types"],
                                                         strict=True)]
        values = orjson.loads(orjson.dumps(encoded))
        out[values[0]] = dict(zip(table["columns"], values, strict=True))
    return out


def test_backup_during_a_load_wipe_restore_and_the_restored_stack_finishes_the_jobs(
    start_stack, db, e2e_db_url, empty_url, qctl, tmp_path
) -> None:
    stack = start_stack(workers=2, concurrency=3, env=FAST)
    producer = Producer(stack)
    producer.start()
    try:
        wait_until(lambda: len(producer.taken()) >= 60, timeout=20, what="a load")
        # surely running while the snapshot is taken: they must outlast the start of the
        # qctl process below (seconds on a loaded machine); the restored stack reruns them
        with stack.client() as client:
            sleepers = client.enqueue_many([job_body("sleep", 8, max_attempts=3)
                                            for _ in range(2)])
        wait_until(lambda: db.value(f"SELECT count(*) FROM jobs WHERE {db.in_list('id', 1)}"
                                    " AND status = 'running'", sleepers) == 2,
                   timeout=15, what="the sleepers to run")
        before = producer.taken() + sleepers
        file = tmp_path / "qstack.qsb"
        done = qctl("backup", "--out", str(file), "--db", e2e_db_url, "-o", "json")
    finally:
        producer.stop()
    taken = producer.taken() + sleepers
    assert producer.error is None, producer.error
    for name in stack.services:  # a disaster: nothing stops cleanly
        stack.kill(name)
    summary = json.loads(done.stdout)
    assert summary["bytes"] == file.stat().st_size > 0

    header, tables = read_backup(file)
    assert header["tables"] == summary["tables"]
    jobs = as_dicts(tables["jobs"])
    assert set(before) <= set(jobs), "a job accepted before the backup is missing from it"
    assert set(jobs) <= set(taken)
    states = Counter(j["status"] for j in jobs.values())
    print("states in the backup:", dict(states), "of", len(taken), "enqueued")
    assert {"pending", "running", "succeeded", "dead", "cancelled"} <= set(states)
    assert all(jobs[s]["status"] == "running" for s in sleepers)

    restored = qctl("restore", str(file), "--db", empty_url, "-o", "json")
    result = json.loads(restored.stdout)
    assert result["tables"] == {t: n for t, n in header["tables"].items()
                                if t != "schema_migrations"}
    target = Db(empty_url)
    for name, table in tables.items():
        count = target.value(f"SELECT count(*) FROM {name}")
        assert count == header["tables"][name], name
        if name != "schema_migrations":  # the target's own, applied just now
            assert portable(target, table) == as_dicts(table), f"{name} differs"
    table_out = qctl("restore", str(file), "--db", empty_url, code=1)
    assert "empty database" in table_out.stderr

    # the restored stack: the backed-up workers are dead, their jobs go back and run
    unfinished = [i for i, j in jobs.items() if j["status"] in UNFINISHED]
    top_token = max(r["token"] or 0 for t in ("jobs", "job_assignments", "distributed_locks")
                    for r in as_dicts(tables[t]).values())
    top_assignment = max(as_dicts(tables["job_assignments"]), default=0)
    stack2 = start_stack(workers=2, concurrency=4, env=FAST, database_url=empty_url)
    try:
        def finished() -> bool:
            rows = target.fetch(f"SELECT status FROM jobs WHERE {target.in_list('id', 1)}",
                                unfinished)
            return all(r["status"] in ("succeeded", "dead", "cancelled") for r in rows)

        wait_until(finished, timeout=45, interval=0.25, what="the restored jobs to finish")
        after = {r["id"]: r for r in target.fetch(
            "SELECT id, task_name, status, attempts FROM jobs"
            f" WHERE {target.in_list('id', 1)}", unfinished)}
        for job_id in unfinished:
            expected = "dead" if jobs[job_id]["task_name"] == "fail" else "succeeded"
            assert after[job_id]["status"] == expected, (job_id, jobs[job_id], after[job_id])
        new_tokens = [r["token"] for r in target.fetch(
            "SELECT token FROM job_assignments WHERE id > $1", top_assignment)]
        assert new_tokens and min(new_tokens) > top_token
        with stack2.client() as client:
            assert client.enqueue("noop") > max(header["sequences"]["jobs.id"], *jobs)
        events = target.value("SELECT count(*) FROM failover_events WHERE id > $1",
                              max(as_dicts(tables["failover_events"]), default=0))
        assert events >= 1  # the backed-up workers were declared dead
    finally:
        stack2.stop(grace=15)


def test_db_performance_stats_reports_the_live_schema(e2e_db_url, qctl) -> None:
    data = json.loads(qctl("db", "performance-stats", "--db", e2e_db_url, "-o", "json").stdout)
    assert set(data) >= {"server", "tables", "indexes", "statements", "latency_ms"}
    assert data["server"]["schema"] in e2e_db_url
    jobs = next(t for t in data["tables"] if t["table"] == "jobs")
    assert jobs["live_rows"] > 0 or jobs["estimated_rows"] > 0
    assert data["latency_ms"]["median"] > 0
    table = qctl("db", "performance-stats", "--db", e2e_db_url).stdout
    for heading in ("cache hit ratio", "round trip", "EST. ROWS", "idx_jobs_dispatch"):
        assert heading in table
