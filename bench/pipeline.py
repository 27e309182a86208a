"""Pipeline benchmark: enqueue rate, drain throughput and enqueue->start latency.

Starts a real stack (registry, scheduler, N workers as processes) on PostgreSQL or MySQL and
prints:
- enqueue rate: N noop jobs submitted in batches of 1,000 over HTTP;
- drain throughput: those jobs all become due at one instant (a shared run_at), and the
  time from that instant to the last one finishing gives jobs/s from a full backlog;
- enqueue->start latency p50/p99: single-job submissions at a fixed rate, measured from the
  job's insert (created_at) to its start on a worker (started_at), and the rate at which the
  scheduler accepted them (lower than the fixed rate when it fell behind), and the p50 of its
  two legs: insert to assignment (the dispatcher) and assignment to start (the worker);
- balance: how far the busiest or idlest worker's share of the succeeded jobs was from an
  even split, in %, for the backlog (drain) and for the whole run (backlog and paced jobs:
  the dispatcher evens out assignments over a 60-second window, so the paced jobs make up
  what the backlog split unevenly, and their own split is not a measure).

    uv run python bench/pipeline.py [--db postgresql://...] [--jobs 10000] [--workers 3]
    uv run python bench/pipeline.py --db postgresql://... --db mysql://...   # side by side

Without --db (or QSTACK_BENCH_DB) an embedded PostgreSQL is started under .qstack/bench.
With several --db, each runs in turn on the same machine and a comparison table follows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import aiohttp
from benchlib import aware, database_label, is_mysql, pct, private_schema, report, sql

from qctl.stack import Stack
from qshared.client import job_body

IN_FLIGHT = 50  # the latency run's submissions at once (the client's pool holds 100 connections)


async def wait_final(url: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = await sql(url, "SELECT count(*) AS n FROM jobs WHERE status IN ('succeeded','dead')")
        if rows[0]["n"] >= n:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {rows[0]['n']} of {n} jobs finished within {timeout}s")
        await asyncio.sleep(0.02)


async def succeeded_per_worker(url: str) -> Counter:
    rows = await sql(url, "SELECT worker_id, COUNT(*) AS n FROM job_assignments"
                          " WHERE outcome = 'succeeded' GROUP BY worker_id")
    return Counter({r["worker_id"]: int(r["n"]) for r in rows})


def balance(per_worker: Counter) -> tuple[list[int], float]:
    """Jobs per worker (largest first) and the largest deviation from an even split, in % of
    the even share."""
    counts = sorted(per_worker.values(), reverse=True)
    even = sum(counts) / len(counts)
    return counts, round(max(abs(n - even) for n in counts) / even * 100, 1)


async def measure(stack: Stack, url: str, jobs: int, rate: float, seconds: float) -> dict:
    headers = {"Authorization": f"Bearer {stack.token}"}
    # aiohttp's client: the load generator shares the cores with the stack, and httpx spent
    # 60 % of a core on 200 submissions/s (a failed import per request before sniffio was a
    # dependency; its pool's hand-out, quadratic in the waiting requests), CPU the stack
    # then lacked; aiohttp spends 6 %
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(stack.scheduler_url, headers=headers, timeout=timeout) as c:
        # 1. enqueue rate, with every job due at one later instant
        lead = max(5.0, jobs / 2000)
        due = datetime.now(UTC) + timedelta(seconds=lead)
        t0 = time.perf_counter()
        for start in range(0, jobs, 1000):
            body = {"jobs": [job_body("noop", run_at=due) for _ in range(min(1000, jobs - start))]}
            async with c.post("/api/v1/jobs/batch", json=body) as resp:
                resp.raise_for_status()
        enqueue_s = time.perf_counter() - t0
        if datetime.now(UTC) >= due:
            raise SystemExit("enqueueing took longer than the lead time; raise it")
        # 2. drain from a full backlog
        await wait_final(url, jobs, timeout=600)
        row = (await sql(url, "SELECT max(finished_at) AS last, SUM(CASE WHEN status ="
                              " 'succeeded' THEN 1 ELSE 0 END) AS ok FROM jobs"))[0]
        drain_s = (aware(row["last"]) - due).total_seconds()
        drained = await succeeded_per_worker(url)
        # 3. latency at a fixed submission rate
        for table in ("jobs", "job_assignments"):
            await sql(url, f"TRUNCATE {table}")
        total = int(rate * seconds)
        interval = 1.0 / rate
        start = time.perf_counter()
        # At most IN_FLIGHT submissions at once, fewer than the client's pool of connections:
        # when the stack falls behind the rate, the rest wait here rather than in the client's
        # pool (httpx's hand-out slowed with every waiting request until it stalled: 14
        # submissions/s, then httpx.PoolTimeout, on a machine where the stack took 120/s).
        # The run then reports the rate the scheduler accepted; the latency is measured from
        # the insert all the same.
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def send() -> None:
            async with gate, c.post("/api/v1/jobs", json=job_body("noop")) as resp:
                resp.raise_for_status()

        sends = []
        for i in range(total):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(send()))
        await asyncio.gather(*sends)
        sent_s = time.perf_counter() - start
        await wait_final(url, total, timeout=max(120, 2 * sent_s))
        rows = await sql(url, "SELECT j.created_at, a.assigned_at, j.started_at FROM jobs j"
                              " JOIN job_assignments a ON a.job_id = j.id")
        lat = [(aware(r["started_at"]) - aware(r["created_at"])).total_seconds() for r in rows]
        # the two legs: insert to assignment (the dispatcher), assignment to start (the worker)
        legs = [[(aware(r[b]) - aware(r[a])).total_seconds() for r in rows]
                for a, b in (("created_at", "assigned_at"), ("assigned_at", "started_at"))]
        paced = await succeeded_per_worker(url)
    return {
        "jobs": jobs, "succeeded": int(row["ok"]),
        "enqueue_jobs_per_s": round(jobs / enqueue_s),
        "drain_jobs_per_s": round(jobs / drain_s), "drain_s": round(drain_s, 3),
        "latency_rate_per_s": rate, "latency_samples": len(lat),
        # below latency_rate_per_s when the stack could not take the submissions at that rate
        "latency_accepted_per_s": round(total / sent_s, 1),
        "enqueue_to_start_p50_ms": round(statistics.median(lat) * 1000, 2),
        "enqueue_to_start_p99_ms": round(pct(lat, 0.99) * 1000, 2),
        "enqueue_to_start_max_ms": round(max(lat) * 1000, 2),
        "enqueue_to_assign_p50_ms": round(statistics.median(legs[0]) * 1000, 2),
        "assign_to_start_p50_ms": round(statistics.median(legs[1]) * 1000, 2),
        **dict(zip(("drain_jobs_per_worker", "drain_balance_max_dev_pct"), balance(drained),
                   strict=True)),
        **dict(zip(("all_jobs_per_worker", "all_balance_max_dev_pct"),
                   balance(drained + paced), strict=True)),
    }


def run_one(db: str | None, args: argparse.Namespace) -> dict:
    with private_schema(db) as url:
        stack = Stack(workers=args.workers, concurrency=args.concurrency, database_url=url,
                      port_base=args.port_base, state_dir=".qstack/bench", log_level="warning",
                      queues=("default",), log=lambda m: print(m, file=sys.stderr))
        try:
            stack.start()
            result = asyncio.run(
                measure(stack, stack.database_url, args.jobs, args.rate, args.seconds)
            )
        finally:
            stack.stop()
    result.update({"workers": args.workers, "concurrency": args.concurrency})
    return result


COMPARED = ("enqueue_jobs_per_s", "drain_jobs_per_s", "latency_accepted_per_s",
            "enqueue_to_start_p50_ms", "enqueue_to_start_p99_ms", "enqueue_to_start_max_ms",
            "enqueue_to_assign_p50_ms", "assign_to_start_p50_ms", "drain_balance_max_dev_pct",
            "all_balance_max_dev_pct")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", action="append", help="a database URL; repeat to compare "
                   "(default: QSTACK_BENCH_DB, else an embedded PostgreSQL)")
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rate", type=float, default=200.0, help="submissions/s for the latency run")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    p.add_argument("--port-base", type=int, default=18400)
    p.add_argument("--out", default="bench/results/pipeline.json")
    args = p.parse_args()
    dbs = args.db or [os.environ.get("QSTACK_BENCH_DB")]
    results = []
    for db in dbs:
        result = run_one(db, args)
        out = args.out if len(dbs) == 1 else args.out.replace(
            ".json", "-mysql.json" if is_mysql(db) else "-postgres.json")
        report(result, out, db)
        results.append(result)
        print()
    if len(results) > 1:
        labels = [database_label(db) for db in dbs]
        width = max(len(k) for k in COMPARED)
        print(f"{'':<{width}}  " + "  ".join(f"{label:>30}" for label in labels))
        for key in COMPARED:
            print(f"{key:<{width}}  " + "  ".join(f"{r[key]:>30}" for r in results))


if __name__ == "__main__":
    main()
