"""Failover benchmark: how long the jobs of a SIGKILLed worker take to run elsewhere.

Starts a real stack (registry, scheduler, failover watcher, N workers as processes) on
PostgreSQL and keeps a steady load of `sleep 0.05` jobs so that every worker holds some.
Then, for each trial:
- picks the next worker holding jobs and notes the ids of its assigned and running jobs;
- SIGKILLs it and polls the database every ~20 ms until each of those jobs is running on
  another worker or finished (a job the victim finished just before the kill counts);
- reads the failover_events row of the victim (detection_ms: its heartbeat age when it was
  declared dead), restarts it and lets the stack settle.

It prints p50/p99/max of the failover time (kill -> all the noted jobs running elsewhere),
of the same for every job the victim held (the dispatcher goes on giving a killed worker
jobs until it is declared dead), of detection_ms and of kill -> recovered (its jobs no
longer held by it), and writes them to bench/results/failover.json. With fewer than 100
trials p99 is the max.

    uv run python bench/failover.py [--db postgresql://...] [--trials 12]

Without --db (or QSTACK_BENCH_DB) an embedded PostgreSQL is started under
.qstack/bench-failover.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time

import asyncpg
from benchlib import pct, private_schema, report

from qctl.stack import Stack
from qshared.client import AsyncClient, job_body

TARGET_P99_S = 5.0
JOB_SECONDS = 0.05

HELD = """
SELECT j.id, j.status FROM jobs j JOIN queue_workers w ON w.id = j.worker_id
WHERE w.id = $1 AND j.status IN ('assigned', 'running') ORDER BY j.id
"""
# The jobs noted at the kill ($1) and all the victim held since (it is still offered jobs
# until it is declared dead): how many are settled (running elsewhere, or finished), how
# many the victim still holds, and whether its failover event is written.
PROGRESS = """
WITH mine AS (
    SELECT id FROM jobs WHERE id = ANY($1::bigint[])
    UNION SELECT id FROM jobs WHERE worker_id = $2 AND status IN ('assigned', 'running')
    UNION SELECT job_id FROM job_assignments WHERE worker_id = $2 AND outcome = 'lost'
), s AS (
    SELECT j.id = ANY($1::bigint[]) AS noted,
           (j.status IN ('succeeded', 'dead', 'cancelled')
            OR (j.status = 'running' AND j.worker_id <> $2)) AS settled,
           (j.status IN ('assigned', 'running') AND j.worker_id = $2) AS held
    FROM jobs j JOIN mine USING (id)
)
SELECT count(*) FILTER (WHERE noted AND settled) AS settled,
       count(*) FILTER (WHERE settled) AS settled_all, count(*) AS jobs_all,
       count(*) FILTER (WHERE held) AS held,
       (SELECT count(*) FROM failover_events WHERE failed_worker_id = $2) AS events
FROM s
"""


def figures(values: list[float], digits: int = 3) -> dict[str, float]:
    return {"p50": round(statistics.median(values), digits),
            "p99": round(pct(values, 0.99), digits), "max": round(max(values), digits)}


async def keep_load(url: str, scheduler_url: str, token: str, target: int,
                    stop: threading.Event) -> int:
    """Top the unfinished jobs up to `target` every 50 ms. Returns: jobs submitted."""
    submitted = 0
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        async with AsyncClient(scheduler_url, token, timeout=30) as client:
            while not stop.is_set():
                try:
                    open_jobs = await pool.fetchval(
                        "SELECT count(*) FROM jobs WHERE status IN"
                        " ('pending', 'assigned', 'running')")
                    if open_jobs < target:
                        bodies = [job_body("sleep", JOB_SECONDS)
                                  for _ in range(target - open_jobs)]
                        submitted += len(await client.enqueue_many(bodies))
                except Exception as exc:  # the load outlives a slow reply; the next tick retries
                    print(f"load: {exc!r}", file=sys.stderr)
                await asyncio.sleep(0.05)
    finally:
        await pool.close()
    return submitted


class Load(threading.Thread):
    """keep_load on a thread of its own: the trials block on the stack's kill and restart."""

    def __init__(self, stack: Stack, target: int) -> None:
        super().__init__(name="load", daemon=True)
        self.stop = threading.Event()
        self.args = (stack.database_url, stack.scheduler_url, stack.token, target, self.stop)
        self.submitted = 0

    def run(self) -> None:
        self.submitted = asyncio.run(keep_load(*self.args))


async def active_id(pool: asyncpg.Pool, stack: Stack, name: str) -> str | None:
    return await pool.fetchval(
        "SELECT id FROM queue_workers WHERE admin_url = $1 AND status = 'active'",
        stack.services[name].url)


async def wait_for(what: str, probe, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting {timeout:.0f}s for {what}")
        await asyncio.sleep(interval)


async def holding(pool: asyncpg.Pool, stack: Stack, name: str) -> tuple[str, list] | None:
    """The worker's id and the jobs it holds, once it holds any."""
    worker_id = await active_id(pool, stack, name)
    if worker_id is None:
        return None
    rows = await pool.fetch(HELD, worker_id)
    return (worker_id, rows) if rows else None


async def trial(stack: Stack, pool: asyncpg.Pool, poll: asyncpg.Connection, name: str,
                timeout: float) -> dict:
    victim, rows = await wait_for(f"{name} to hold jobs",
                                  lambda: holding(pool, stack, name), timeout=30)
    # read again right before the kill, as fresh as can be
    rows = await poll.fetch(HELD, victim) or rows
    ids = [r["id"] for r in rows]
    t_kill = time.monotonic()
    # Called on the main thread (blocking this loop is fine: nothing else runs on it) so
    # that restarted workers keep their die-with-the-parent signal.
    stack.kill(name)
    failover_s = recovered_s = event_seen_s = None
    while True:
        p = await poll.fetchrow(PROGRESS, ids, victim)
        now = time.monotonic() - t_kill
        if recovered_s is None and p["held"] == 0:
            recovered_s = now
        if event_seen_s is None and p["events"]:
            event_seen_s = now
        if failover_s is None and p["settled"] == len(ids):
            failover_s = now
        if failover_s is not None and p["held"] == 0 and p["settled_all"] == p["jobs_all"]:
            failover_all_s = now
            break
        if now > timeout:
            raise SystemExit(f"{name} ({victim}): {p['settled']} of {len(ids)} jobs settled "
                             f"{timeout:.0f}s after the kill")
        await asyncio.sleep(0.02)
    event = await wait_for(f"the failover event of {victim}", lambda: poll.fetchrow(
        "SELECT * FROM failover_events WHERE failed_worker_id = $1", victim), timeout=timeout)
    if event_seen_s is None:
        event_seen_s = time.monotonic() - t_kill
    stack.restart(name)
    await wait_for(f"{name} to hold jobs again", lambda: holding(pool, stack, name), timeout=30)
    await asyncio.sleep(1.0)  # heartbeats and the liveness lock of the new process settle
    return {
        "worker": name, "victim": victim, "jobs": len(ids), "jobs_all": p["jobs_all"],
        "running_at_kill": sum(1 for r in rows if r["status"] == "running"),
        "failover_s": round(failover_s, 3), "failover_all_s": round(failover_all_s, 3),
        "kill_to_recovered_s": round(recovered_s, 3),
        "kill_to_event_seen_s": round(event_seen_s, 3), "event_type": event["event_type"],
        "detection_ms": round(event["detection_ms"], 1),
        "recovery_ms": round(event["recovery_ms"], 1),
        "jobs_recovered": event["jobs_recovered"], "jobs_dead": event["jobs_dead"],
    }


async def measure(stack: Stack, url: str, args: argparse.Namespace) -> dict:
    pool = await asyncpg.create_pool(url, min_size=2, max_size=3)
    poll = await asyncpg.connect(url)
    load = Load(stack, args.outstanding)
    load.start()
    try:
        names = [f"worker-{i + 1}" for i in range(args.workers)]
        for name in names:
            await wait_for(f"{name} to hold jobs", lambda n=name: holding(pool, stack, n),
                           timeout=30)
        await asyncio.sleep(args.warmup)
        trials = []
        for i in range(args.trials):
            t = await trial(stack, pool, poll, names[i % len(names)], args.timeout)
            trials.append(t)
            print(f"trial {i + 1:>2}: {t['worker']} held {t['jobs']:>2} jobs "
                  f"({t['running_at_kill']} running, {t['jobs_all']} with those given it after "
                  f"the kill); running elsewhere after {t['failover_s']:.3f}s "
                  f"(all {t['failover_all_s']:.3f}s, recovered {t['kill_to_recovered_s']:.3f}s,"
                  f" detection_ms {t['detection_ms']:.0f})", file=sys.stderr)
    finally:
        load.stop.set()
        load.join(timeout=30)
        await poll.close()
        await pool.close()
    failover = [t["failover_s"] for t in trials]
    return {
        "trials": len(trials), "jobs_submitted": load.submitted,
        "jobs_per_trial": figures([float(t["jobs"]) for t in trials], 1),
        "failover_s": figures(failover),
        "failover_all_s": figures([t["failover_all_s"] for t in trials]),
        "detection_ms": figures([t["detection_ms"] for t in trials], 1),
        "recovery_ms": figures([t["recovery_ms"] for t in trials], 1),
        "kill_to_recovered_s": figures([t["kill_to_recovered_s"] for t in trials]),
        "kill_to_event_seen_s": figures([t["kill_to_event_seen_s"] for t in trials]),
        "target_p99_s": TARGET_P99_S, "met": pct(failover, 0.99) <= TARGET_P99_S,
        "event_types": sorted({t["event_type"] for t in trials}),
        "runs": trials,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("QSTACK_BENCH_DB"))
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--outstanding", type=int, default=36,
                   help="unfinished jobs the load keeps in the system")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before trial 1")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a trial may take")
    p.add_argument("--heartbeat-interval", type=float,
                   help="WORKER_HEALTH_CHECK_INTERVAL (default: the settings' default, 2 s)")
    p.add_argument("--port-base", type=int, default=18600)
    p.add_argument("--out", default="bench/results/failover.json")
    args = p.parse_args()
    if args.trials < 1 or args.workers < 2:
        p.error("at least one trial and two workers (the jobs must go somewhere)")

    env = {}
    if args.heartbeat_interval is not None:
        env["WORKER_HEALTH_CHECK_INTERVAL"] = str(args.heartbeat_interval)
    with private_schema(args.db) as url:
        stack = Stack(workers=args.workers, concurrency=args.concurrency, failover=True,
                      database_url=url, port_base=args.port_base,
                      state_dir=".qstack/bench-failover", log_level="warning", env=env,
                      queues=("default",), log=lambda m: print(m, file=sys.stderr))
        try:
            stack.start()
            result = asyncio.run(measure(stack, stack.database_url, args))
        finally:
            stack.stop()
    result.update({
        "workers": args.workers, "concurrency": args.concurrency,
        "outstanding": args.outstanding,
        "heartbeat_interval_s": args.heartbeat_interval or "default",
    })
    report(result, args.out, args.db, hide=("runs",))

if __name__ == "__main__":
    main()
