"""The scheduler leader dies, the database restarts: dispatch resumes, nothing is lost."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from e2e_helpers import Db, wait_until

from qshared.client import Client, job_body
from qshared.errors import QstackError

pytestmark = pytest.mark.e2e

LEADER_TTL = 5.0


def test_killing_the_dispatcher_leader_of_two_replicas(start_stack, db):
    stack = start_stack(workers=3, concurrency=4, schedulers=2)
    owner = wait_until(lambda: db.value("SELECT owner FROM distributed_locks WHERE lock_key ="
                                        " 'qstack:leader:dispatcher' AND expires_at > now()"),
                       timeout=15, what="a dispatcher leader")
    pid = int(owner.split(":")[2])
    leader = next(n for n, s in stack.services.items() if s.proc and s.proc.pid == pid)
    other = next(n for n in ("scheduler", "scheduler-2") if n != leader)
    with Client(stack.services[other].url, stack.token) as client:
        ids = []
        for _ in range(6):
            ids += client.enqueue_many([job_body("sleep", 0.004) for _ in range(500)])
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") > 500,
                   timeout=60, what="the load to be under way")
        killed = db.value("SELECT clock_timestamp()")
        stack.kill(leader, signal.SIGKILL)
        first_after = wait_until(lambda: db.value(
            "SELECT min(assigned_at) FROM job_assignments WHERE assigned_at > $1", killed),
            timeout=30, what="a new assignment")
        gap = (first_after - killed).total_seconds()
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 3000,
                   timeout=120, what="all 3000 jobs to succeed")
    new_owner = db.value("SELECT owner FROM distributed_locks WHERE lock_key ="
                         " 'qstack:leader:dispatcher'")
    print(f"dispatch resumed {gap:.2f}s after the leader was killed; new leader {new_owner}")
    assert new_owner != owner and f":{stack.services[other].proc.pid}:" in new_owner
    # the dead leader's lease runs out at most LEADER_TTL after its last renewal; the standby
    # asks every 0.2 s, and one dispatch pass follows
    assert gap <= LEADER_TTL + 0.5
    assert db.value("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0


def test_restarting_postgresql_during_a_load(start_stack):
    # A private, embedded PostgreSQL: never the machine's shared server.
    stack = start_stack(workers=3, concurrency=4, database_url=None)
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
        stack.embedded.stop()
        time.sleep(1.5)
        stack.embedded.start()
        time.sleep(4)
    finally:
        stop.set()
        producer.join(30)
    assert accepted and refused > 0, "the restart should have refused some submissions"
    try:
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'"
                                    " AND id = ANY($1)", accepted) == len(accepted),
                   timeout=120, interval=0.5, what="every accepted job to succeed")
    except BaseException:
        print("jobs:", db.fetch("SELECT status, count(*) FROM jobs GROUP BY 1"))
        print("missing:", len(set(accepted) - {r["id"] for r in db.fetch("SELECT id FROM jobs")}))
        print("workers:", db.fetch("SELECT id, status, pid FROM queue_workers"))
        print("assigned:", db.fetch("SELECT worker_id, min(assigned_at), max(assigned_at), count(*)"
                                    " FROM jobs WHERE status = 'assigned' GROUP BY 1"))
        print("db started:", db.value("SELECT pg_postmaster_start_time()"))
        raise
    print(f"{len(accepted)} jobs accepted, {refused} batches refused during the restart")
    assert all(s.running for s in stack.services.values()), "a service died with the database"
    with stack.client() as client:
        assert client.wait(client.enqueue("noop"), timeout=30)["status"] == "succeeded"
