"""Every console command of the specification, run as `qctl GROUP:COMMAND` (the
specification's spelling) against a running stack, each checked by its effect in the
database, not only by its exit code.

The failover watcher of this stack holds its lease but judges the pool only when asked
(FAILOVER_CHECK_INTERVAL is an hour), so the faults planted for `worker:validate-pool` stay
in place until a command below clears them.
"""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest
from e2e_helpers import (
    Db,
    empty_schema,
    interrupt,
    qctl_runner,
    spawn_worker,
    stack_env,
    wait_until,
)
from stack_fixtures import held_place, on_each_database

from qshared.client import job_body

pytestmark = [pytest.mark.e2e, on_each_database]

QUEUES = ("default", "emails")
HOUR, DAY = 3600, 86400


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=2, concurrency=2, queues=QUEUES,
                       env={"FAILOVER_CHECK_INTERVAL": "3600"})


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    return stack_env(stack, tmp_path_factory.mktemp("qctl-config"))


@pytest.fixture(scope="module")
def qctl(env):
    return qctl_runner(env)


@pytest.fixture(scope="module")
def registry(stack):
    with httpx.Client(base_url=stack.registry_url, timeout=30,
                      headers={"Authorization": f"Bearer {stack.token}"}) as c:
        yield c


def as_json(done: subprocess.CompletedProcess[str]):
    return json.loads(done.stdout)


def enqueue(stack, n: int, task: str = "noop", **options) -> list[int]:
    with stack.client() as client:
        return client.enqueue_many([job_body(task, **options) for _ in range(n)])


def register(registry, worker_id: str, queues: list[str], **extra) -> None:
    body = {"id": worker_id, "hostname": "planted", "pid": 1, "queues": queues,
            "concurrency": 1, **extra}
    assert registry.post("/api/v1/workers", json=body).status_code == 201


def live_worker_ids(db) -> set[str]:
    return {r["id"] for r in db.fetch(
        "SELECT id FROM queue_workers WHERE status IN ('active', 'draining')")}


# -- db:migrate, db:status ------------------------------------------------------------------
def empty_place(backend: str, server_dsn: str):
    """A new, empty PostgreSQL schema or MySQL database: yields its URL; dropped after."""
    if backend == "postgres":
        return empty_schema(server_dsn)
    return held_place(backend, server_dsn, migrate=False)


def test_db_migrate_and_status_on_an_empty_schema(qctl, e2e_backend, e2e_server_dsn):
    with empty_place(e2e_backend, e2e_server_dsn) as url:
        empty = qctl("db:status", "--db", url, "-o", "json", code=1)
        pending = as_json(empty)["pending"]
        assert pending >= 5 and "pending" in empty.stderr

        applied = as_json(qctl("db:migrate", "--db", url, "-o", "json"))["applied"]
        assert len(applied) == pending
        target = Db(url)
        assert target.value("SELECT count(*) FROM schema_migrations") == pending
        schema = "DATABASE()" if target.dialect == "mysql" else "current_schema()"
        assert "config" in {r["column_name"] for r in target.fetch(
            "SELECT column_name AS column_name FROM information_schema.columns"
            f" WHERE table_schema = {schema} AND table_name = 'queue_workers'")}

        status = as_json(qctl("db:status", "--db", url, "-o", "json"))
        assert status["pending"] == 0
        assert {m["status"] for m in status["migrations"]} == {"applied"}
        assert as_json(qctl("db:migrate", "--db", url, "-o", "json"))["applied"] == []


# -- worker:start and the read-only worker commands ------------------------------------------
@pytest.fixture(scope="module")
def started_worker(stack, env, db, tmp_path_factory):
    """A worker run by `qctl worker:start` for a queue of its own, stopped at the end."""
    port = stack.port_base + 25
    proc = spawn_worker(env, port, "cli-only", 3, tmp_path_factory.mktemp("worker") / "log")
    try:
        worker_id = wait_until(lambda: db.value(
            "SELECT id FROM queue_workers WHERE pid = $1 AND status = 'active'", proc.pid),
            timeout=30, what="the started worker's registration")
        yield {"id": worker_id, "proc": proc, "port": port}
    finally:
        if proc.poll() is None:
            interrupt(proc)


def test_worker_start_runs_a_worker_that_takes_its_queue(stack, db, started_worker):
    row = db.fetch("SELECT * FROM queue_workers WHERE id = $1", started_worker["id"])[0]
    assert (row["queues"], row["concurrency"], row["status"]) == ("cli-only", 3, "active")
    config = json.loads(row["config"])  # the test's connection reads jsonb as text
    assert config["worker_registration_ttl"] == 10.0 and "noop" in config["tasks"]
    ids = enqueue(stack, 6, queue="cli-only")
    wait_until(lambda: db.value(f"SELECT count(*) FROM jobs WHERE {db.in_list('id', 1)}"
                                " AND status = 'succeeded'", ids) == 6,
               timeout=30, what="the cli-only jobs")
    assert {r["worker_id"] for r in db.fetch(
        f"SELECT worker_id FROM jobs WHERE {db.in_list('id', 1)}", ids)} == {started_worker["id"]}


def test_worker_list_stats_and_health(qctl, db, started_worker):
    listed = as_json(qctl("worker:list", "-o", "json"))["workers"]
    assert {w["id"] for w in listed} == {r["id"] for r in db.fetch("SELECT id FROM queue_workers")}
    table = qctl("worker:list").stdout
    assert started_worker["id"] in table and "cli-only" in table

    stats = {r["worker_id"]: r for r in as_json(qctl("worker:stats", "-o", "json"))["workers"]}
    counted = db.fetch("SELECT worker_id, count(*) AS n FROM job_assignments"
                       " WHERE outcome = 'succeeded' GROUP BY worker_id")
    assert {r["worker_id"]: r["n"] for r in counted} == {
        w: s["succeeded"] for w, s in stats.items() if s["succeeded"]}

    url = f"http://127.0.0.1:{started_worker['port']}/health"
    assert qctl("worker:health", "--url", url).returncode == 0
    qctl("worker:health", "--url", "http://127.0.0.1:9/health", "--timeout", "1", code=1)


def test_worker_resource_stats_match_the_health_checks(qctl, db, started_worker):
    wait_until(lambda: db.value("SELECT count(*) FROM worker_health_checks WHERE worker_id = $1",
                                started_worker["id"]) >= 2, timeout=15, what="two health checks")
    data = as_json(qctl("worker:resource-stats", "--window", "600", "-o", "json"))
    rows = {r["worker_id"]: r for r in data["workers"]}
    in_db = db.fetch("SELECT worker_id, count(*) AS n, max(memory_bytes) AS mem"
                     f" FROM worker_health_checks WHERE checked_at > {db.ago(600)}"
                     " GROUP BY worker_id")
    assert set(rows) == {r["worker_id"] for r in in_db}
    for r in in_db:  # heartbeats go on while we look: the command saw no more than the db has
        assert 1 <= rows[r["worker_id"]]["checks"] <= r["n"]
        assert rows[r["worker_id"]]["memory_max"] <= r["mem"]
    mine = rows[started_worker["id"]]
    assert mine["concurrency"] == 3 and 0 <= mine["utilization"] <= 1
    assert data["totals"]["workers"] == len(live_worker_ids(db))
    assert started_worker["id"] in qctl("worker:resource-stats").stdout


def test_worker_export_config_writes_every_live_worker(qctl, db, started_worker, tmp_path):
    out = tmp_path / "worker-config.json"
    qctl("worker:export-config", "--out", str(out))
    exported = json.loads(out.read_text())
    rows = {r["id"]: r for r in db.fetch(
        "SELECT * FROM queue_workers WHERE status IN ('active', 'draining')")}
    assert {w["id"] for w in exported["workers"]} == set(rows)
    for w in exported["workers"]:
        assert w["config"] == json.loads(rows[w["id"]]["config"])
        assert ",".join(w["queues"]) == rows[w["id"]]["queues"]
    assert exported["queues"]["cli-only"] == [started_worker["id"]]
    assert exported["skew"] == {}
    assert as_json(qctl("worker:export-config"))["workers"] == exported["workers"]
    unwritable = qctl("worker:export-config", "--out", str(tmp_path / "no-dir" / "x.json"), code=1)
    assert "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr


def test_worker_validate_config(qctl, env, db):
    done = as_json(qctl("worker:validate-config", "-o", "json"))
    checks = {c["name"]: c for c in done["checks"]}
    assert all(c["ok"] for c in checks.values())
    migrations = db.value("SELECT count(*) FROM schema_migrations")
    assert f"({migrations} migrations)" in checks["database"]["detail"]
    assert done["settings"]["qstack_token"] == "***"

    bad = qctl_runner({**env, "QSTACK_TOKEN": "wrong", "WORKER_APP": "no_such_module"})
    failed = bad("worker:validate-config", code=1)
    assert "registry" in failed.stderr and "tasks" in failed.stderr
    assert "refused the token" in failed.stdout and "no_such_module" in failed.stdout
    failed_json = as_json(bad("worker:validate-config", "-o", "json", code=1))
    assert {c["name"] for c in failed_json["checks"] if not c["ok"]} == {"registry", "tasks"}
    broken = qctl_runner({**env, "WORKER_CONCURRENCY": "many"})("worker:validate-config", code=1)
    assert "WORKER_CONCURRENCY" in broken.stdout


# -- worker:validate-pool ---------------------------------------------------------------------
def test_worker_validate_pool_is_quiet_on_a_healthy_pool(qctl, started_worker):
    healthy = qctl("worker:validate-pool")
    assert "the pool is healthy" in healthy.stdout
    report = as_json(qctl("worker:validate-pool", "-o", "json"))
    assert report["ok"] and report["problems"] == [] and report["workers"] >= 3


def test_worker_validate_pool_reports_each_planted_fault(stack, qctl, db, registry):
    # an unserved queue: jobs wait where no worker listens
    enqueue(stack, 2, queue="nobody-serves-this")
    # version and configuration skew, and a clock 5 s ahead: an old worker that still beats
    register(registry, "planted-old", ["planted-old-q"], version="0.0.9",
             config={"worker_health_check_interval": 7.0, "worker_registration_ttl": 10.0})
    beat = {"health": {"sent_at": time.time() + 5}}
    assert registry.post("/api/v1/workers/planted-old/heartbeat", json=beat).status_code == 200
    # a stale worker the watcher has not taken down
    register(registry, "planted-stale", ["planted-stale-q"])
    db.fetch(f"UPDATE queue_workers SET last_heartbeat_at = {db.ago(HOUR)}"
             " WHERE id = 'planted-stale'")
    # a leaked lock: held by a worker that is gone
    db.fetch("INSERT INTO distributed_locks (lock_key, owner, worker_id, token, expires_at)"
             f" VALUES ('planted:leak', 'gone-worker', 'gone-worker', $1, {db.ago(-HOUR)})",
             *db.next_tokens(1))

    done = qctl("worker:validate-pool", "-o", "json", code=1)
    report = as_json(done)
    found = {(p["check"], p["subject"]) for p in report["problems"]}
    assert ("unserved_queues", "nobody-serves-this") in found
    assert ("version_skew", "pool") in found
    assert ("config_skew", "worker_health_check_interval") in found
    assert ("clock_skew", "planted-old") in found
    assert ("stale_heartbeats", "planted-stale") in found
    assert ("lock_leaks", "planted:leak") in found
    assert not report["ok"] and "problem(s)" in done.stderr
    assert report["checks"]["lock_leaks"] == 1
    table = qctl("worker:validate-pool", code=1).stdout
    assert "nobody-serves-this" in table and "planted:leak" in table
    # the clock check honours its limit
    loose = as_json(qctl("worker:validate-pool", "--max-clock-skew", "60000", "-o", "json",
                         code=1))
    assert "clock_skew" not in {p["check"] for p in loose["problems"]}


# -- locks ------------------------------------------------------------------------------------
def test_queue_list_locks_and_clear_stale_locks(qctl, db):
    db.fetch("INSERT INTO distributed_locks (lock_key, owner, token, expires_at)"
             f" VALUES ('planted:stale', 'someone', $1, {db.ago(HOUR)})", *db.next_tokens(1))
    listed = as_json(qctl("queue:list-locks", "-o", "json"))["locks"]
    assert {lock["key"] for lock in listed} == {
        r["lock_key"] for r in db.fetch("SELECT lock_key FROM distributed_locks")}
    assert "planted:stale" in qctl("queue:list-locks").stdout

    cleared = as_json(qctl("queue:clear-stale-locks", "-o", "json"))
    assert "planted:stale" in json.dumps(cleared)
    keys = {r["lock_key"] for r in db.fetch("SELECT lock_key FROM distributed_locks")}
    assert "planted:stale" not in keys
    assert {"planted:leak", "qstack:leader:dispatcher", "qstack:leader:failover"} <= keys


# -- recovery: failover-recovery --force, deregister, cleanup-crashed --------------------------
def test_worker_failover_recovery_force_takes_back_a_dead_workers_jobs(stack, qctl, db, registry):
    register(registry, "planted-dead", ["planted-dead-q"], concurrency=3)
    ids = enqueue(stack, 3, queue="planted-dead-q", max_attempts=3)
    wait_until(lambda: db.value(f"SELECT count(*) FROM jobs WHERE {db.in_list('id', 1)} AND"
                                " worker_id = 'planted-dead' AND status = 'assigned'", ids) == 3,
               timeout=15, what="the planted worker's assignments")
    # it "crashed" 5 s ago: no session lock (it never had one) and no heartbeat since
    db.fetch(f"UPDATE queue_workers SET started_at = {db.ago(60)},"
             f" last_heartbeat_at = {db.ago(5)} WHERE id = 'planted-dead'")
    report = as_json(qctl("worker:failover-recovery", "--force", "-o", "json"))
    assert "planted-dead" in report["declared_dead"]
    assert db.value("SELECT status FROM queue_workers WHERE id = 'planted-dead'") == "failed"
    jobs = db.fetch("SELECT status, attempts, worker_id FROM jobs"
                    f" WHERE {db.in_list('id', 1)}", ids)
    # assigned, never started: back to pending without spending an attempt
    assert [(j["status"], j["attempts"], j["worker_id"]) for j in jobs] == [("pending", 0, None)] * 3
    event = db.fetch("SELECT * FROM failover_events WHERE failed_worker_id = 'planted-dead'")
    assert len(event) == 1 and event[0]["jobs_recovered"] == 3
    # the planted stale and old workers hold no session lock either: forced, they are dead too
    assert db.value("SELECT status FROM queue_workers WHERE id = 'planted-stale'") == "failed"


def test_worker_deregister_then_cleanup_crashed_returns_the_orphans(stack, qctl, db, registry):
    register(registry, "planted-gone", ["planted-gone-q"], concurrency=2)
    ids = enqueue(stack, 2, queue="planted-gone-q")
    wait_until(lambda: db.value(f"SELECT count(*) FROM jobs WHERE {db.in_list('id', 1)} AND"
                                " worker_id = 'planted-gone'", ids) == 2,
               timeout=15, what="the planted worker's assignments")
    qctl("worker:deregister", "--worker-id", "planted-gone")
    assert db.value("SELECT status FROM queue_workers WHERE id = 'planted-gone'") == "stopped"
    assert db.value("SELECT count(*) FROM jobs WHERE worker_id = 'planted-gone'") == 2

    qctl("worker:cleanup-crashed")
    assert db.value(f"SELECT count(*) FROM jobs WHERE {db.in_list('id', 1)}"
                    " AND status = 'pending' AND worker_id IS NULL", ids) == 2
    assert db.value("SELECT event_type FROM failover_events"
                    " WHERE failed_worker_id = 'planted-gone'") == "orphans_recovered"
    qctl("worker:deregister", "--worker-id", "no-such-worker", code=5)


# -- retention clean-ups --------------------------------------------------------------------
def test_queue_cleanup_health_checks_and_failover_events(qctl, db):
    worker = db.value("SELECT id FROM queue_workers WHERE status = 'active' LIMIT 1")
    for days in (40, 20):
        db.fetch("INSERT INTO worker_health_checks (worker_id, checked_at, status)"
                 f" VALUES ($1, {db.ago(days * DAY)}, 'healthy')", worker)
        db.fetch("INSERT INTO failover_events (event_type, failover_at)"
                 f" VALUES ('planted', {db.ago(days * 4 * DAY)})")
    checks_before = db.value("SELECT count(*) FROM worker_health_checks")

    done = as_json(qctl("queue:cleanup-health-checks", "--days=30", "-o", "json"))
    assert done["deleted"] == 1
    assert db.value("SELECT count(*) FROM worker_health_checks") >= checks_before - 1
    assert db.value("SELECT count(*) FROM worker_health_checks"
                    f" WHERE checked_at < {db.ago(30 * DAY)}") == 0
    assert db.value("SELECT count(*) FROM worker_health_checks"
                    f" WHERE checked_at < {db.ago(19 * DAY)}") == 1

    done = as_json(qctl("queue:cleanup-failover-events", "--days=90", "-o", "json"))
    assert done["deleted"] == 1
    ages = [r["days"] for r in db.fetch(
        f"SELECT round({db.seconds_since('failover_at')} / 86400) AS days"
        " FROM failover_events WHERE event_type = 'planted'")]
    assert ages == [80]
    assert db.value("SELECT count(*) FROM failover_events WHERE event_type <> 'planted'") >= 2

    qctl("queue:cleanup-health-checks", "--days=-1", code=2)
    assert db.value("SELECT count(*) FROM worker_health_checks"
                    f" WHERE checked_at < {db.ago(19 * DAY)}") == 1


def test_queue_cleanup_orphaned_assignments(stack, qctl, db):
    [job] = enqueue(stack, 1)
    wait_until(lambda: db.value("SELECT status FROM jobs WHERE id = $1", job) == "succeeded",
               timeout=15, what="the job")
    db.fetch("INSERT INTO job_assignments (job_id, token, worker_id, queue_name)"
             " VALUES (987654321, 1, 'gone-worker', 'default')")
    db.fetch("INSERT INTO job_assignments (job_id, token, worker_id, queue_name)"
             " VALUES ($1, 1, 'gone-worker', 'default')", job)
    kept = db.value("SELECT count(*) FROM job_assignments WHERE outcome = 'succeeded'")

    as_json(qctl("queue:cleanup-orphaned-assignments", "-o", "json"))
    assert db.value("SELECT count(*) FROM job_assignments WHERE job_id = 987654321") == 0
    assert db.value("SELECT outcome FROM job_assignments WHERE job_id = $1"
                    " AND worker_id = 'gone-worker'", job) == "orphaned"
    assert db.value("SELECT count(*) FROM job_assignments WHERE outcome = 'succeeded'") == kept


# -- db:performance-stats --------------------------------------------------------------------
def test_db_performance_stats(qctl, env, db):
    mysql = db.dialect == "mysql"
    # the row estimate is exact right after ANALYZE (on InnoDB too: the table has fewer pages
    # than the statistics sample)
    db.fetch("ANALYZE TABLE jobs" if mysql else "ANALYZE jobs")
    stats = as_json(qctl("db:performance-stats", "--db", env["DATABASE_URL"], "-o", "json"))
    tables = {t["table"]: t for t in stats["tables"]}
    assert {"jobs", "queue_workers", "distributed_locks", "job_assignments",
            "worker_health_checks", "failover_events"} <= set(tables)
    assert tables["jobs"]["estimated_rows"] == db.value("SELECT count(*) FROM jobs")
    indexes = {i["index"]: i for i in stats["indexes"]}
    if mysql and not db.value("SELECT @@performance_schema"):
        # MySQL counts index use only in performance_schema (off by default on MariaDB):
        # without it the figure is unknown, not zero
        assert indexes["idx_jobs_dispatch"]["scans"] is None
    else:
        assert indexes["idx_jobs_dispatch"]["scans"] > 0  # the dispatcher picks through it
    assert stats["server"]["schema"] == db.value(
        "SELECT DATABASE()" if mysql else "SELECT current_schema()")
    assert stats["latency_ms"]["median"] > 0
    table = qctl("db:performance-stats", "--db", env["DATABASE_URL"]).stdout
    assert "idx_jobs_dispatch" in table and "worker_health_checks" in table


# -- worker:stop, worker:stop-all (last: they end the pool) -----------------------------------
def test_worker_stop_graceful_waits_until_the_worker_stopped(qctl, db, started_worker):
    done = qctl("worker:stop", "--worker-id", started_worker["id"], "--graceful", "--wait",
                "--timeout", "30")
    assert "stopped after" in done.stdout
    assert db.value("SELECT status FROM queue_workers WHERE id = $1",
                    started_worker["id"]) == "stopped"
    assert started_worker["proc"].wait(timeout=20) == 0


def test_worker_stop_all_graceful(stack, qctl, db):
    live = live_worker_ids(db)
    ids = enqueue(stack, 20, "sleep", payload=0.05)
    done = as_json(qctl("worker:stop-all", "--graceful", "--wait", "--timeout", "40", "-o",
                        "json", timeout=90))
    assert live <= set(done["stopped"])
    assert set(done["states"].values()) <= {"stopped", "failed"}
    assert live_worker_ids(db) == set()
    for name in ("worker-1", "worker-2"):
        assert stack.services[name].proc.wait(timeout=20) == 0
    # nothing was lost: every job finished or went back to pending, none is left with a worker
    assert db.value(f"SELECT count(*) FROM jobs WHERE {db.in_list('id', 1)} AND status IN"
                    " ('assigned', 'running')", ids) == 0
