"""The rolling update of docs/operations.md, done under a steady load: for each worker in
turn, `qctl worker stop --graceful --wait`, start its replacement, `qctl worker health`.
Nothing is lost and nothing runs twice."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest
from e2e_helpers import QCTL, interrupt, qctl_runner, spawn_worker, stack_env, wait_until
from stack_fixtures import on_each_database

from qshared.client import job_body

pytestmark = [pytest.mark.e2e, on_each_database]

WORKERS = 3


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_rolling_update_under_load_loses_nothing(start_stack, db, tmp_path):
    stack = start_stack(workers=WORKERS, concurrency=3, queues=("default",))
    env = stack_env(stack, tmp_path / "config")
    qctl = qctl_runner(env)
    old = {name: wait_until(lambda s=svc: db.value(
        "SELECT id FROM queue_workers WHERE pid = $1 AND status = 'active'", s.proc.pid),
        timeout=20, what=f"{name}'s row") for name, svc in stack.services.items()
        if svc.kind == "worker"}

    accepted: list[int] = []
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        with stack.client() as client:
            while producing.is_set():
                accepted.extend(client.enqueue_many(
                    [job_body("sleep", 0.05) for _ in range(10)]))
                time.sleep(0.05)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    replacements: list[subprocess.Popen] = []
    health_checks: dict[str, subprocess.Popen] = {}
    try:
        try:
            wait_until(lambda: len(accepted) > 100, timeout=20, what="the load to start")
            for i, (name, worker_id) in enumerate(old.items()):
                held = db.value("SELECT count(*) FROM jobs WHERE worker_id = $1"
                                " AND status IN ('assigned', 'running')", worker_id)
                print(f"{name} ({worker_id}) holds {held} job(s) when asked to stop")
                qctl("worker", "stop", "--worker-id", worker_id, "--graceful", "--wait",
                     "--timeout", "60", timeout=90)
                assert stack.services[name].proc.wait(timeout=20) == 0
                port = stack.port_base + 20 + i
                replacements.append(spawn_worker(env, port, "default", 3,
                                                 tmp_path / f"new-{i}.log"))
                url = f"http://127.0.0.1:{port}/health"
                # The next worker is stopped once this /health answers 200; `qctl worker
                # health` (two interpreter starts: seconds on a busy machine) checks the same
                # URL in the background meanwhile, its exit code checked below.
                wait_until(lambda u=url: healthy(u), timeout=60, interval=0.2,
                           what=f"the replacement of {name} to be healthy")
                health_checks[name] = subprocess.Popen(
                    [str(QCTL), "worker", "health", "--url", url], env=env, text=True,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(1)  # the new pool alone under load for a moment
        finally:
            producing.clear()
            producer.join(timeout=30)

        total = len(accepted)
        wait_until(lambda: db.value("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
                   == total, timeout=120, what=f"all {total} jobs to succeed")
        for name, check in health_checks.items():
            out = check.communicate(timeout=60)[0]
            assert check.returncode == 0, f"qctl worker health of {name}'s replacement: {out}"
        assert db.value("SELECT count(*) FROM jobs") == total
        # nothing ran twice: one succeeded assignment per job, and no attempt was spent on
        # the update (a graceful stop hands unstarted jobs back without counting them)
        assert db.value("SELECT count(*) FROM job_assignments WHERE outcome = 'succeeded'") == total
        assert db.value("SELECT max(attempts) FROM jobs") == 1
        by_outcome = {r["outcome"]: r["n"] for r in db.fetch(
            "SELECT outcome, count(*) AS n FROM job_assignments GROUP BY outcome")}
        assert set(by_outcome) <= {"succeeded", "returned"}, by_outcome
        assert db.value("SELECT count(*) FROM failover_events WHERE event_type <> 'held_back'") == 0
        rows = {r["id"]: r["status"] for r in db.fetch("SELECT id, status FROM queue_workers")}
        assert all(rows[w] == "stopped" for w in old.values())
        new = [w for w in rows if w not in old.values()]
        assert len(new) == WORKERS and all(rows[w] == "active" for w in new)
        ran_on_new = db.value("SELECT count(*) FROM job_assignments WHERE outcome = 'succeeded'"
                              f" AND {db.in_list('worker_id', 1)}", new)
        print(f"rolling update: {total} jobs, {ran_on_new} ran on the new workers; "
              f"assignments by outcome: {by_outcome}")
        assert ran_on_new > 0
    finally:
        for proc in replacements:
            interrupt(proc)
        for check in health_checks.values():
            if check.poll() is None:
                check.kill()
                check.wait()
