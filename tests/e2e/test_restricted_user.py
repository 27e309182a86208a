"""The whole stack under infra/db's runtime user: every service logs in as qstack_app on a
place the owner migrated (the stack does not migrate), runs jobs, fails a killed worker over,
and no service meets a privilege it lacks."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backends import storage_backends, with_database, with_query
from e2e_helpers import Db, free_port_base, qctl_runner, wait_until
from grant_places import GrantedPlace, held_granted_place

from qctl.stack import Stack
from qshared.client import job_body

pytestmark = pytest.mark.e2e

DENIED = re.compile(r"permission denied|command denied|access denied", re.IGNORECASE)


@pytest.fixture(scope="module", params=storage_backends())
def place(request: pytest.FixtureRequest) -> Iterator[GrantedPlace]:
    server = request.getfixturevalue({"postgres": "pg_dsn", "mysql": "mysql_dsn"}[request.param])
    with held_granted_place(request.param, server) as made:
        yield made


@pytest.fixture(scope="module")
def admin_db(place: GrantedPlace) -> Db:
    """The place seen by the administrative user, to check effects."""
    if place.backend == "postgres":
        return Db(with_query(place.server_url, search_path=place.name))
    return Db(with_database(place.server_url, place.name))


@pytest.fixture(scope="module")
def stack(place: GrantedPlace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = Stack(
        database_url=place.app_url, migrate=False, workers=2, concurrency=2,
        queues=("default",), failover=True, port_base=free_port_base(),
        state_dir=Path(tmp_path_factory.mktemp("restricted")),
        env={"WORKER_REGISTRATION_TTL": "4", "WORKER_HEALTH_CHECK_INTERVAL": "1"},
    )
    try:
        started.start()
        yield started
    finally:
        started.stop(grace=15)


def test_jobs_run_and_a_killed_worker_fails_over(stack: Stack, admin_db: Db) -> None:
    with stack.client() as client:
        ids = client.enqueue_many([job_body("echo", {"n": i}) for i in range(60)])
        wait_until(lambda: admin_db.value(
            f"SELECT count(*) FROM jobs WHERE status = 'succeeded' AND {admin_db.in_list('id', 1)}",
            ids) == len(ids), timeout=60, what="60 echo jobs to succeed")

        long = client.enqueue("sleep", 3)
        holder = wait_until(lambda: admin_db.value(
            "SELECT worker_id FROM jobs WHERE id = $1 AND status = 'running'", long),
            timeout=30, what="the sleep job to start")
        pid = admin_db.value("SELECT pid FROM queue_workers WHERE id = $1", holder)
        [victim] = [name for name, s in stack.services.items()
                    if s.kind == "worker" and s.proc.pid == pid]
        stack.kill(victim, signal.SIGKILL)
        event = wait_until(lambda: admin_db.fetch(
            "SELECT * FROM failover_events WHERE failed_worker_id = $1", holder),
            timeout=30, what="a failover event for the killed worker")[0]
        assert event["event_type"] == "worker_crashed"
        job = client.wait(long, timeout=30)
        assert job["status"] == "succeeded"
        assert job["assignments"][0]["worker_id"] == holder
        assert job["assignments"][-1]["worker_id"] != holder

    # the scheduler's shared snapshot and the registry's list, read and written as qstack_app
    with httpx.Client(headers={"Authorization": f"Bearer {stack.token}"}, timeout=10) as http:
        assert http.get(f"{stack.scheduler_url}/admin/metrics").status_code == 200
        assert http.get(f"{stack.scheduler_url}/admin/metrics").status_code == 200
    assert admin_db.value("SELECT count(*) FROM system_snapshots") >= 1
    assert admin_db.value("SELECT count(*) FROM schema_migrations") >= 1  # the owner's rows


def test_no_service_met_a_missing_privilege(stack: Stack) -> None:
    refused = {name: [line for line in s.log_path.read_text().splitlines() if DENIED.search(line)]
               for name, s in stack.services.items() if s.log_path.exists()}
    assert {name: lines for name, lines in refused.items() if lines} == {}


def test_qctl_changes_the_schema_as_db_owner_url_and_reads_as_the_runtime_user(
    place: GrantedPlace, tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL"))}
    env.update(DATABASE_URL=place.app_url, DB_OWNER_URL=place.owner_url,
               QSTACK_CONFIG_DIR=str(tmp_path))
    qctl = qctl_runner(env)
    migrated = json.loads(qctl("db", "migrate", "--wait", "5", "-o", "json").stdout)
    assert f"//{place.owner}:" in migrated["database"] and migrated["applied"] == []
    status = qctl("db", "status")  # everything else runs as the services do
    assert place.app in status.stdout and place.owner not in status.stdout
