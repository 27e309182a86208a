"""Scrape overhead: drain throughput with and without a real Prometheus scraping every service.

Starts a real stack (registry, scheduler, failover watcher, N workers as processes) and drains
`--jobs` noop jobs from a full backlog in rounds that alternate: without Prometheus running,
then with a real Prometheus (the shipped infra/prometheus jobs and alert rules, loopback
targets) scraping every worker, service and /admin/metrics every `--interval` (1 s by default:
15 to 60 times more often than the specification's intervals, so the figure is an upper
bound). Prometheus runs on the same machine, so its own CPU counts against the drain too.

Prints the median drain jobs/s of each side and the overhead (1 - with/without).

    uv run python bench/scrape_overhead.py [--db postgresql://...] [--rounds 3]

Without --db (or QSTACK_BENCH_DB) an embedded PostgreSQL is started under .qstack/bench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from benchlib import private_schema, report, sql

from qctl.prometheus import LocalPrometheus, stack_targets
from qctl.stack import Stack
from qshared.client import job_body


async def drain(stack: Stack, url: str, jobs: int) -> float:
    """Jobs/s from a full backlog of `jobs` noop jobs all due at one instant."""
    await sql(url, "TRUNCATE jobs, job_assignments")
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.scheduler_url, headers=headers, timeout=60) as c:
        due = datetime.now(UTC) + timedelta(seconds=max(4.0, jobs / 2000))
        for start in range(0, jobs, 1000):
            body = {"jobs": [job_body("noop", run_at=due) for _ in range(min(1000, jobs - start))]}
            (await c.post("/api/v1/jobs/batch", json=body)).raise_for_status()
    if datetime.now(UTC) >= due:
        raise SystemExit("enqueueing took longer than the lead time")
    deadline = time.monotonic() + 600
    while True:
        done = (await sql(url, "SELECT count(*) AS n FROM jobs WHERE status = 'succeeded'"))[0]["n"]
        if done >= jobs:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done} of {jobs} jobs succeeded within 600 s")
        await asyncio.sleep(0.05)
    last = (await sql(url, "SELECT max(finished_at) AS t FROM jobs"))[0]["t"]
    return jobs / (last - due).total_seconds()


def wait_scraping(prom: LocalPrometheus, expected: int, timeout: float = 30.0) -> int:
    """Wait until every target has been scraped successfully; returns the target count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = prom.targets_up()
        if len(up) >= expected and all(up.values()):
            return len(up)
        time.sleep(0.2)
    raise SystemExit(f"prometheus targets not all up: {prom.targets_up()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("QSTACK_BENCH_DB"))
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="rounds per side (they alternate)")
    p.add_argument("--interval", default="1s", help="Prometheus scrape interval")
    p.add_argument("--port-base", type=int, default=18500)
    p.add_argument("--out", default="bench/results/scrape_overhead.json")
    args = p.parse_args()

    state = Path(".qstack/bench")
    with private_schema(args.db) as url:
        stack = Stack(workers=args.workers, concurrency=args.concurrency, database_url=url,
                      port_base=args.port_base, state_dir=state, log_level="warning",
                      queues=("default",), failover=True, log=lambda m: print(m, file=sys.stderr))
        try:
            stack.start()
            targets = stack_targets(stack)
            expected = sum(len(t) for t in targets.values())
            prom = LocalPrometheus(targets, stack.token, state / "prometheus",
                                   args.port_base + 90, interval=args.interval)
            rates: dict[str, list[float]] = {"without": [], "with": []}
            scraped = 0
            asyncio.run(drain(stack, stack.database_url, min(args.jobs, 2000)))  # warm-up
            for i in range(args.rounds * 2):
                side = "without" if i % 2 == 0 else "with"
                try:
                    if side == "with":
                        prom.start()
                        scraped = wait_scraping(prom, expected)
                    rate = asyncio.run(drain(stack, stack.database_url, args.jobs))
                    if side == "with":
                        samples = prom.query("sum(scrape_samples_scraped)")
                finally:
                    prom.stop()
                rates[side].append(rate)
                extra = f", {samples[0]['value'][1]} samples per scrape round" if side == "with" else ""
                print(f"round {i + 1}: {side} scraping {rate:,.0f} jobs/s{extra}", file=sys.stderr)
        finally:
            stack.stop()
    without, with_ = statistics.median(rates["without"]), statistics.median(rates["with"])
    report({
        "jobs": args.jobs, "workers": args.workers, "concurrency": args.concurrency,
        "scrape_interval": args.interval, "targets": scraped,
        "drain_without_jobs_per_s": [round(r) for r in rates["without"]],
        "drain_with_jobs_per_s": [round(r) for r in rates["with"]],
        "median_without": round(without), "median_with": round(with_),
        "overhead_percent": round((1 - with_ / without) * 100, 2),
    }, args.out, args.db)


if __name__ == "__main__":
    main()
