"""Scrape overhead: what a real Prometheus scraping every service costs the drain.

Starts a real stack (registry, scheduler, failover watcher, N workers as processes) and a real
Prometheus (the shipped infra/prometheus jobs and alert rules, loopback targets) scraping
every worker, service and /admin/metrics every `--interval` (1 s by default: 15 to 60 times
more often than the shipped intervals). Prometheus runs on the same machine, so its own CPU
counts against the drain too.

Throughput: one long drain of `--jobs` noop jobs from a full backlog, with scraping switched
off and on (a Prometheus configuration reload) every `--window` seconds. Jobs finished per
window are counted from the database afterwards; each "on" window is compared with the
mean of the "off" windows on either side, so that the slow drift of a long drain cancels
out, and the median of those comparisons is the overhead. (Separate drains per side move by
±10 % from one to the next here, more than the effect measured.)

CPU: what scraping costs per second (each target's CPU per scrape, measured over 200 scrapes
of each, once per interval; /admin/metrics' queries once per 10 s; Prometheus's own CPU) as a
share of the CPU the drain keeps busy.

    uv run python bench/scrape_overhead.py [--db postgresql://...] [--jobs 150000] [--window 2]

Without --db (or QSTACK_BENCH_DB) an embedded PostgreSQL is started under .qstack/bench.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from benchlib import private_schema, report, sql

from qctl.prometheus import LocalPrometheus, stack_targets
from qctl.stack import Stack
from qshared.client import job_body
from qshared.storage.queries import load_queries


async def enqueue_backlog(stack: Stack, url: str, jobs: int) -> datetime:
    """`jobs` noop jobs all due at one instant, returned; the jobs table emptied first."""
    await sql(url, "TRUNCATE jobs, job_assignments")
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.scheduler_url, headers=headers, timeout=60) as c:
        due = datetime.now(UTC) + timedelta(seconds=max(3.0, jobs / 8000))
        for start in range(0, jobs, 1000):
            body = {"jobs": [job_body("noop", run_at=due) for _ in range(min(1000, jobs - start))]}
            (await c.post("/api/v1/jobs/batch", json=body)).raise_for_status()
    if datetime.now(UTC) >= due:
        raise SystemExit("enqueueing took longer than the lead time")
    return due


async def finished_times(url: str) -> list[float]:
    rows = await sql(url, "SELECT EXTRACT(EPOCH FROM finished_at)::float8 AS t FROM jobs"
                          " WHERE status = 'succeeded'")
    return sorted(r["t"] for r in rows)


async def count_done(url: str) -> int:
    return (await sql(url, "SELECT count(*) AS n FROM jobs WHERE status = 'succeeded'"))[0]["n"]


def windowed_drain(stack: Stack, prom: LocalPrometheus, jobs: int, window: float,
                   expected: int) -> list[tuple[bool, float, float]]:
    """Drain with scraping toggled every `window` s: [(scraping, start, end)] in epoch s."""
    url = stack.database_url
    prom.set_scraping(False)
    due = asyncio.run(enqueue_backlog(stack, url, jobs)).timestamp()
    time.sleep(max(due - time.time(), 0))
    windows, on = [], False
    start = time.time()
    deadline = time.monotonic() + 900
    while asyncio.run(count_done(url)) < jobs:
        if time.monotonic() > deadline:
            raise SystemExit("the drain took longer than 900 s")
        time.sleep(max(start + window - time.time(), 0))
        end = time.time()
        windows.append((on, start, end))
        on = not on
        prom.set_scraping(on)
        start = end
    prom.set_scraping(True)
    wait_scraping(prom, expected)
    return windows


def _cpu_seconds(prom: LocalPrometheus) -> float:
    """CPU time Prometheus itself has used so far (user + system)."""
    assert prom.proc is not None
    times = psutil.Process(prom.proc.pid).cpu_times()
    return times.user + times.system


def wait_scraping(prom: LocalPrometheus, expected: int, timeout: float = 30.0) -> int:
    """Wait until every target has been scraped successfully; returns the target count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = prom.targets_up()
        if len(up) >= expected and all(up.values()):
            return len(up)
        time.sleep(0.2)
    raise SystemExit(f"prometheus targets not all up: {prom.targets_up()}")


def scrape_cpu(stack: Stack, n: int) -> dict[str, float]:
    """CPU milliseconds one scrape costs each target process (measured over `n` scrapes)."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    cost = {}
    with httpx.Client(headers=headers, timeout=10) as http:
        for service in stack.services.values():
            assert service.proc is not None
            proc = psutil.Process(service.proc.pid)
            paths = ["/metrics"] + (["/admin/metrics"] if service.kind == "scheduler" else [])
            for path in paths:
                t = proc.cpu_times()
                for _ in range(n):
                    http.get(service.url + path).raise_for_status()
                after = proc.cpu_times()
                spent = (after.user + after.system) - (t.user + t.system)
                cost[f"{service.name}{path}"] = spent / n * 1000
    return cost


async def admin_metrics_sql_ms(url: str, repeat: int = 5) -> float:
    """Wall time of the queries behind one /admin/metrics computation (done once per 10 s)."""
    q = load_queries("postgres")
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        await sql(url, q["queue_stats"])
        await sql(url, "SELECT * FROM queue_workers")
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def busy_cores(t0: tuple[float, float], t1: tuple[float, float]) -> float:
    """Machine-wide CPU cores busy between two (cpu seconds, wall seconds) readings."""
    return (t1[0] - t0[0]) / (t1[1] - t0[1])


def machine_cpu() -> tuple[float, float]:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0), time.monotonic()


def seconds(interval: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60}
    for unit in ("ms", "s", "m"):
        if interval.endswith(unit):
            return float(interval[: -len(unit)]) * units[unit]
    raise SystemExit(f"--interval {interval!r}: use e.g. 1s, 500ms, 15s")


def overheads(windows: list[tuple[bool, float, float]], times: list[float]) -> dict[str, Any]:
    """Jobs/s per window, and each full "on" window against its "off" neighbours."""
    rates = [(bisect.bisect_left(times, end) - bisect.bisect_left(times, start)) / (end - start)
             for _, start, end in windows]
    # the first window includes the ramp-up, the last the tail of the drain
    inner = list(range(1, len(windows) - 1))
    paired = []
    for i in inner:
        if windows[i][0] and i - 1 in inner and i + 1 in inner:
            neighbours = (rates[i - 1] + rates[i + 1]) / 2
            paired.append((1 - rates[i] / neighbours) * 100)
    on = [rates[i] for i in inner if windows[i][0]]
    off = [rates[i] for i in inner if not windows[i][0]]
    if not paired:
        raise SystemExit("too few windows: raise --jobs or lower --window")
    return {
        "windows": len(windows), "windows_compared": len(paired),
        "mean_off_jobs_per_s": round(statistics.mean(off)),
        "mean_on_jobs_per_s": round(statistics.mean(on)),
        "mean_overhead_percent": round((1 - statistics.mean(on) / statistics.mean(off)) * 100, 2),
        "throughput_overhead_percent": round(statistics.median(paired), 2),
        "throughput_overhead_iqr_percent": [round(q, 2) for q in
                                            statistics.quantiles(paired, n=4)[::2]]
        if len(paired) >= 2 else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("QSTACK_BENCH_DB"))
    p.add_argument("--jobs", type=int, default=150_000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--window", type=float, default=2.0, help="seconds between on and off")
    p.add_argument("--interval", default="1s", help="Prometheus scrape interval")
    p.add_argument("--port-base", type=int, default=18500)
    p.add_argument("--out", default="bench/results/scrape_overhead.json")
    args = p.parse_args()
    interval = seconds(args.interval)

    state = Path(".qstack/bench")
    with private_schema(args.db) as url:
        stack = Stack(workers=args.workers, concurrency=args.concurrency, database_url=url,
                      port_base=args.port_base, state_dir=state, log_level="warning",
                      queues=("default",), failover=True, log=lambda m: print(m, file=sys.stderr))
        try:
            stack.start()
            targets = stack_targets(stack)
            expected = sum(len(t) for t in targets.values())
            with LocalPrometheus(targets, stack.token, state / "prometheus",
                                 args.port_base + 90, interval=args.interval) as prom:
                scraped = wait_scraping(prom, expected)
                windowed_drain(stack, prom, min(args.jobs, 5000), args.window, expected)  # warm-up
                cpu0, m0 = _cpu_seconds(prom), machine_cpu()
                windows = windowed_drain(stack, prom, args.jobs, args.window, expected)
                on_time = sum(end - start for on, start, end in windows if on)
                prom_cores = (_cpu_seconds(prom) - cpu0) / on_time  # its CPU while scraping
                drain_cores = busy_cores(m0, machine_cpu())
            times = asyncio.run(finished_times(stack.database_url))
            sql_ms = asyncio.run(admin_metrics_sql_ms(stack.database_url))  # a full jobs table
            per_scrape = scrape_cpu(stack, 200)
        finally:
            stack.stop()
    result = overheads(windows, times)
    print(f"{result['windows']} windows of {args.window:g} s, {result['windows_compared']} "
          "compared", file=sys.stderr)
    # What scraping costs per second, in CPU: every target once per interval, /admin/metrics'
    # queries once per 10 s, and Prometheus itself; against the CPU the drain keeps busy.
    scrape_cores = sum(per_scrape.values()) / 1000 / interval + sql_ms / 1000 / 10 + prom_cores
    result.update({
        "jobs": args.jobs, "workers": args.workers, "concurrency": args.concurrency,
        "scrape_interval": args.interval, "targets": scraped,
        "cpu_ms_per_scrape": {k: round(v, 3) for k, v in per_scrape.items()},
        "admin_metrics_sql_ms": round(sql_ms, 2),
        "prometheus_cores_while_scraping": round(prom_cores, 4),
        "drain_busy_cores": round(drain_cores, 2),
        "scrape_cores": round(scrape_cores, 4),
        "cpu_overhead_percent": round(scrape_cores / drain_cores * 100, 2),
    })
    report(result, args.out, args.db)


if __name__ == "__main__":
    main()
