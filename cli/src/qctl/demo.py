"""The demo load of `qctl demo`: a producer of mixed jobs and a worker killer, as threads."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from qctl.stack import Stack
from qshared.client import job_body


@dataclass(frozen=True)
class Kind:
    """One kind of demo job: how often it comes (weight), where and what it runs."""

    weight: int
    queue: str
    task: str
    payload: Callable[[random.Random], Any]
    max_attempts: int = 3


# quick, slow, flaky and failing jobs on the three queues `qctl up` serves
KINDS = (
    Kind(40, "default", "noop", lambda r: {"n": r.randint(1, 1000)}),
    Kind(10, "default", "echo", lambda r: {"order": r.randint(1000, 9999)}),
    Kind(20, "emails", "sleep", lambda r: round(r.uniform(0.1, 0.8), 2)),  # sending a mail
    Kind(8, "reports", "sleep", lambda r: round(r.uniform(2.0, 6.0), 1)),  # a slow report
    Kind(4, "reports", "cpu", lambda r: r.randint(100_000, 400_000)),
    Kind(10, "emails", "flaky", lambda r: 0.3),
    Kind(4, "default", "fail", lambda r: {"message": "upstream said 503"}, max_attempts=2),
    Kind(4, "reports", "fail", lambda r: {"message": "template not found"}, max_attempts=1),
)


@dataclass
class DemoLoad:
    """Keeps `rate` jobs/s coming and, every `chaos_every` seconds, SIGKILLs a worker and
    starts it again `restart_after` seconds later, so that failover shows. Counts what it did.
    """

    stack: Stack
    rate: float = 20.0
    chaos_every: float = 60.0
    restart_after: float = 8.0
    seed: int | None = None
    log: Callable[[str], None] = lambda _m: None
    enqueued: int = 0
    kills: int = 0
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target, name in ((self._produce, "demo-producer"), (self._chaos, "demo-chaos")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def batch(self, rng: random.Random, n: int) -> list[dict[str, Any]]:
        """`n` jobs drawn from KINDS by weight."""
        kinds = rng.choices(KINDS, weights=[k.weight for k in KINDS], k=n)
        return [job_body(k.task, k.payload(rng), queue=k.queue, max_attempts=k.max_attempts)
                for k in kinds]

    def _produce(self) -> None:
        rng = random.Random(self.seed)
        tick = 0.25  # four small batches a second, so the charts move smoothly
        owed = 0.0
        headers = {"Authorization": f"Bearer {self.stack.token}"}
        with httpx.Client(base_url=self.stack.scheduler_url, headers=headers, timeout=10) as http:
            while not self._stop.wait(tick):
                owed += self.rate * tick * rng.uniform(0.5, 1.5)  # a load that breathes
                n, owed = int(owed), owed - int(owed)
                if not n:
                    continue
                try:
                    resp = http.post("/api/v1/jobs/batch", json={"jobs": self.batch(rng, n)})
                    resp.raise_for_status()
                    self.enqueued += n
                except httpx.HTTPError as exc:  # the scheduler may be restarting: go on
                    self.errors += 1
                    self.log(f"demo producer: {exc}")

    def _chaos(self) -> None:
        rng = random.Random(None if self.seed is None else self.seed + 1)
        while not self._stop.wait(self.chaos_every):
            alive = [s for s in self.stack.services.values() if s.kind == "worker" and s.running]
            if len(alive) < 2:  # never leave the demo without a worker
                continue
            victim = rng.choice(alive)
            self.log(f"demo chaos: SIGKILL {victim.name}; back in {self.restart_after:.0f}s")
            self.stack.kill(victim.name, signal.SIGKILL)
            self.kills += 1
            if self._stop.wait(self.restart_after):
                return
            with contextlib.suppress(Exception):  # a failed restart is logged by the stack
                self.stack.restart(victim.name)
