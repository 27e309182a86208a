"""The scheduler leader dies, the database restarts: dispatch resumes, nothing is lost.

Both run on PostgreSQL and on MySQL/MariaDB. The database restart needs a server of the
test's own: the embedded PostgreSQL (pgserver), or a private MariaDB (tests/private_mariadb.py,
Debian's mariadb-install-db and mariadbd) - never the machine's shared server.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import required_backends
from e2e_helpers import Db, wait_until
from private_mariadb import PrivateMariaDB, missing_binaries
from stack_fixtures import on_each_database

from qctl.stack import Stack
from qshared.client import Client, job_body
from qshared.errors import QstackError

pytestmark = pytest.mark.e2e

LEADER_TTL = 5.0
LEADER_KEY = "qstack:leader:dispatcher"


@on_each_database
def test_killing_the_dispatcher_leader_of_two_replicas(start_stack, db):
    stack = start_stack(workers=3, concurrency=4, schedulers=2)
    # Both backends elect the leader on the distributed_locks row (MySQL too: no GET_LOCK);
    # its owner is "scheduler:<host>:<pid>:<random>" (qshared.http.owner_id).
    owner = wait_until(lambda: db.value(
        f"SELECT owner FROM distributed_locks WHERE lock_key = $1 AND expires_at > {db.now}",
        LEADER_KEY), timeout=15, what="a dispatcher leader")
    pid = int(owner.split(":")[2])
    leader = next(n for n, s in stack.services.items() if s.proc and s.proc.pid == pid)
    other = next(n for n in ("scheduler", "scheduler-2") if n != leader)
    with Client(stack.services[other].url, stack.token) as client:
        ids = []
        for _ in range(6):
            ids += client.enqueue_many([job_body("sleep", 0.004) for _ in range(500)])
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") > 500,
                   timeout=60, what="the load to be under way")
        # the database's clock, as assigned_at has it (a single statement: now() is its start)
        killed = db.value(f"SELECT {db.now} AS t")
        stack.kill(leader, signal.SIGKILL)
        first_after = wait_until(lambda: db.value(
            "SELECT min(assigned_at) FROM job_assignments WHERE assigned_at > $1", killed),
            timeout=30, what="a new assignment")
        gap = (first_after - killed).total_seconds()
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 3000,
                   timeout=120, what="all 3000 jobs to succeed")
    new_owner = db.value("SELECT owner FROM distributed_locks WHERE lock_key = $1", LEADER_KEY)
    print(f"[{db.dialect}] dispatch resumed {gap:.2f}s after the leader was killed;"
          f" new leader {new_owner}")
    assert new_owner != owner and f":{stack.services[other].proc.pid}:" in new_owner
    # the dead leader's lease runs out at most LEADER_TTL after its last renewal; the standby
    # asks every 0.2 s, and one dispatch pass follows
    assert gap <= LEADER_TTL + 0.5
    assert db.value("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0


# -- the database restarts under a load --------------------------------------------------
@dataclass
class PrivateDatabase:
    """A stack on a database server of the test's own, which the test may stop and start."""

    stack: Stack
    stop: Callable[[], object]
    start: Callable[[], object]
    started_at_sql: str  # when the server (re)started, for the diagnostics


@contextlib.contextmanager
def private_database(backend: str, start_stack: Callable[..., Stack],
                     tmp_path: Path) -> Iterator[PrivateDatabase]:
    """A stack on the embedded PostgreSQL (pgserver) or on a private MariaDB server."""
    if backend == "postgres":
        stack = start_stack(workers=3, concurrency=4, database_url=None)
        assert stack.embedded is not None
        yield PrivateDatabase(stack, stack.embedded.stop, lambda: stack.embedded.start(),
                              "SELECT pg_postmaster_start_time() AS t")
        return
    if missing := missing_binaries():
        reason = f"a private MariaDB needs {', '.join(missing)} (Debian's mariadb-server)"
        if "mysql" in required_backends():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = PrivateMariaDB(tmp_path / "mariadb")
    began = time.monotonic()
    server.start()  # the stack migrates its database (Stack(migrate=True))
    print(f"private MariaDB on port {server.port} ready in {time.monotonic() - began:.2f}s")
    try:
        stack = start_stack(workers=3, concurrency=4, database_url=server.url)
        try:
            yield PrivateDatabase(
                stack, server.stop, server.start,
                "SELECT NOW(6) - INTERVAL VARIABLE_VALUE SECOND AS t"
                " FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'")
        finally:
            stack.stop(grace=15)  # before its database goes away for good
    finally:
        server.remove()


@on_each_database
def test_restarting_the_database_during_a_load(start_stack, e2e_backend, tmp_path):
    with private_database(e2e_backend, start_stack, tmp_path) as private:
        restart_during_a_load(private)


def restart_during_a_load(private: PrivateDatabase) -> None:
    """Submissions during the outage are refused (not lost), every accepted job succeeds,
    and every service outlives the restart."""
    stack = private.stack
    db = Db(stack.database_url)
    accepted: list[int] = []
    refused = 0
    stop = threading.Event()

    def produce() -> None:
        nonlocal refused
        with Client(stack.scheduler_url, stack.token, timeout=5) as client:
            while not stop.is_set():
                try:
                    accepted.extend(client.enqueue_many([job_body("noop") for _ in range(50)]))
                except QstackError:
                    refused += 1  # not accepted: the producer may try again
                time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(2)
        began = time.monotonic()
        private.stop()
        stopped = time.monotonic()
        time.sleep(1.5)
        private.start()
        print(f"[{db.dialect}] database stopped in {stopped - began:.2f}s,"
              f" started again in {time.monotonic() - stopped - 1.5:.2f}s")
        time.sleep(4)
    finally:
        stop.set()
        producer.join(30)
    assert accepted and refused > 0, "the restart should have refused some submissions"
    try:
        wait_until(lambda: db.value(f"SELECT count(*) FROM jobs WHERE status = 'succeeded'"
                                    f" AND {db.in_list('id', 1)}", accepted) == len(accepted),
                   timeout=120, interval=0.5, what="every accepted job to succeed")
    except BaseException:
        print("jobs:", db.fetch("SELECT status, count(*) FROM jobs GROUP BY status"))
        print("missing:", len(set(accepted) - {r["id"] for r in db.fetch("SELECT id FROM jobs")}))
        print("workers:", db.fetch("SELECT id, status, pid FROM queue_workers"))
        print("assigned:", db.fetch("SELECT worker_id, min(assigned_at), max(assigned_at), count(*)"
                                    " FROM jobs WHERE status = 'assigned' GROUP BY worker_id"))
        print("db started:", db.value(private.started_at_sql))
        for name, service in stack.services.items():
            print(f"--- {name}\n{service.log_tail(30)}")
        raise
    print(f"[{db.dialect}] {len(accepted)} jobs accepted,"
          f" {refused} batches refused during the restart")
    assert all(s.running for s in stack.services.values()), "a service died with the database"
    with stack.client() as client:
        assert client.wait(client.enqueue("noop"), timeout=30)["status"] == "succeeded"
