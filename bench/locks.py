"""Lock manager benchmark: acquire latency without and with contention, and contention rate.

Starts a real stack (registry and scheduler as processes, no workers) on PostgreSQL and
measures through the HTTP API:
- uncontended: acquire + release of distinct keys one after the other; the acquire call
  alone is timed (p50/p99 over --samples), once with a plain keep-alive HTTP client
  (aiohttp: the API's own latency, which the 2 ms target is about) and once with the
  `qshared.locks` client (httpx, which adds its own overhead);
- contended: --clients `qshared.locks` clients on ONE key for --seconds, each acquiring
  with a wait, holding --hold-ms, releasing; acquire latency (waiting included) p50/p99;
- contention rate: the share of acquire requests that found the lock held, from the
  scheduler's qstack_lock_contention_total / qstack_lock_acquire_seconds_count.

    uv run python bench/locks.py [--db postgresql://...] [--samples 3000]

Without --db (or QSTACK_BENCH_DB) an embedded PostgreSQL is started under .qstack/bench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time

import aiohttp
import httpx
from benchlib import pct, private_schema, report
from prometheus_client.parser import text_string_to_metric_families

from qctl.stack import Stack
from qshared.locks import Locks

TARGET_UNCONTENDED_P99_MS = 2.0


async def lock_counters(url: str) -> tuple[float, float]:
    """(acquire requests, of which contended) from the scheduler's /metrics."""
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"{url}/metrics")).text
    requests = contended = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "qstack_lock_acquire_seconds_count":
                requests += sample.value
            elif sample.name == "qstack_lock_contention_total":
                contended += sample.value
    return requests, contended


async def uncontended_api(url: str, token: str, samples: int, warmup: int = 200) -> list[float]:
    """The acquire call alone, over one keep-alive connection of a lean HTTP client."""
    prefix = f"bench:api:{secrets.token_hex(3)}"
    times = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(url, headers=headers) as http:
        for i in range(warmup + samples):
            t0 = time.perf_counter()
            async with http.post(f"/api/v1/locks/{prefix}:{i}",
                                 json={"owner": "bench", "ttl_ms": 30_000}) as resp:
                held = await resp.json()
            elapsed = time.perf_counter() - t0
            if resp.status != 200:
                raise SystemExit(f"acquire: {resp.status} {held}")
            async with http.post(f"/api/v1/locks/{prefix}:{i}/release",
                                 json={"owner": "bench", "token": held["token"]}) as resp:
                await resp.read()
            if i >= warmup:
                times.append(elapsed)
    return times


async def uncontended_client(locks: Locks, samples: int, warmup: int = 200) -> list[float]:
    """The same through `Locks.acquire`."""
    prefix = f"bench:client:{secrets.token_hex(3)}"
    times = []
    for i in range(warmup + samples):
        t0 = time.perf_counter()
        held = await locks.acquire(f"{prefix}:{i}", ttl=30)
        elapsed = time.perf_counter() - t0
        await locks.release(held)
        if i >= warmup:
            times.append(elapsed)
    return times


async def contended(url: str, token: str, clients: int, seconds: float, hold: float
                    ) -> tuple[list[float], int]:
    key = f"bench:hot:{secrets.token_hex(3)}"
    stop_at = time.monotonic() + seconds
    times: list[float] = []
    overlaps = 0
    holding: list[int] = []

    async def client() -> None:
        nonlocal overlaps
        async with Locks(url, token) as locks:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                held = await locks.acquire(key, ttl=10, wait=10)
                times.append(time.perf_counter() - t0)
                holding.append(held.token)
                overlaps += len(holding) > 1
                await asyncio.sleep(hold)
                holding.remove(held.token)
                await locks.release(held)

    await asyncio.gather(*(client() for _ in range(clients)))
    return times, overlaps


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def measure(stack: Stack, args: argparse.Namespace) -> dict:
    url = stack.scheduler_url
    before = await lock_counters(url)
    api = await uncontended_api(url, stack.token, args.samples)
    async with Locks(url, stack.token) as locks:
        client = await uncontended_client(locks, args.samples)
    middle = await lock_counters(url)
    hot, overlaps = await contended(url, stack.token, args.clients, args.seconds,
                                    args.hold_ms / 1000)
    after = await lock_counters(url)
    quiet_rate = (middle[1] - before[1]) / max(middle[0] - before[0], 1)
    hot_rate = (after[1] - middle[1]) / max(after[0] - middle[0], 1)
    return {
        "uncontended_samples": len(api),
        "uncontended_acquire_p50_ms": ms(statistics.median(api)),
        "uncontended_acquire_p99_ms": ms(pct(api, 0.99)),
        "uncontended_acquire_max_ms": ms(max(api)),
        "uncontended_p99_target_ms": TARGET_UNCONTENDED_P99_MS,
        "uncontended_p99_target_met": pct(api, 0.99) * 1000 <= TARGET_UNCONTENDED_P99_MS,
        "uncontended_via_locks_client_p50_ms": ms(statistics.median(client)),
        "uncontended_via_locks_client_p99_ms": ms(pct(client, 0.99)),
        "uncontended_contention_rate": round(quiet_rate, 4),
        "contended_clients": args.clients,
        "contended_hold_ms": args.hold_ms,
        "contended_seconds": args.seconds,
        "contended_acquisitions": len(hot),
        "contended_acquisitions_per_s": round(len(hot) / args.seconds, 1),
        "contended_acquire_p50_ms": ms(statistics.median(hot)),
        "contended_acquire_p99_ms": ms(pct(hot, 0.99)),
        "contended_acquire_max_ms": ms(max(hot)),
        "contention_rate": round(hot_rate, 4),
        "overlapping_holders_seen": overlaps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("QSTACK_BENCH_DB"))
    p.add_argument("--samples", type=int, default=3000, help="uncontended acquisitions timed")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="length of the contended run")
    p.add_argument("--hold-ms", type=float, default=2.0, help="how long each holder holds")
    p.add_argument("--port-base", type=int, default=18500)
    p.add_argument("--out", default="bench/results/locks.json")
    args = p.parse_args()

    with private_schema(args.db) as url:
        stack = Stack(workers=0, database_url=url, port_base=args.port_base,
                      state_dir=".qstack/bench", log_level="warning", queues=("default",),
                      log=lambda m: print(m, file=sys.stderr))
        try:
            stack.start()
            result = asyncio.run(measure(stack, args))
        finally:
            stack.stop()
    result["clients"] = ("uncontended: aiohttp keep-alive, then qshared.locks (httpx); "
                         "contended: qshared.locks")
    report(result, args.out, args.db)

if __name__ == "__main__":
    main()
