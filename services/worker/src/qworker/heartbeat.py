"""Heartbeats from a thread of their own, so a busy event loop is not taken for a dead worker."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil

log = logging.getLogger(__name__)


class LoopWatch:
    """The event loop's lag: set by a task on the loop, read from any thread."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self.last_tick = time.monotonic()
        self.lag = 0.0

    def tick(self, lag: float) -> None:
        self.last_tick = time.monotonic()
        self.lag = lag

    def current_lag(self) -> float:
        """The measured lag, or how long the loop has not ticked if it is stuck now."""
        stuck = time.monotonic() - self.last_tick - self.period
        return max(self.lag, stuck, 0.0)


class Heartbeat(threading.Thread):
    """POSTs a heartbeat with health figures every `interval`; hands replies to callbacks."""

    def __init__(
        self, *, registry_url: str, token: str | None, worker_id: str, interval: float,
        figures: Callable[[], dict[str, Any]],
        on_reply: Callable[[int, dict[str, Any]], None],
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=registry_url, headers=headers, timeout=interval * 2)
        self._path = f"/api/v1/workers/{worker_id}/heartbeat"
        self.interval = interval
        self.figures = figures
        self.on_reply = on_reply
        self.stopped = threading.Event()
        self.last_ok: float | None = None
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)  # the first call only starts the measurement
        self.last: dict[str, Any] | None = None  # what the latest measure() found

    def measure(self) -> dict[str, Any]:
        """CPU (percent of one core, since the previous call), resident memory and the
        worker's own figures. Call it once per interval: each call restarts the CPU window."""
        with self._proc.oneshot():
            cpu = self._proc.cpu_percent(None)
            rss = self._proc.memory_info().rss
        self.last = {"cpu_percent": cpu, "memory_bytes": rss, **self.figures()}
        return self.last

    def beat(self) -> None:
        health = self.measure()
        try:
            resp = self._http.post(self._path, json={"health": {**health, "sent_at": time.time()}})
        except httpx.HTTPError as exc:
            log.warning("heartbeat failed: %s", exc)
            self.on_reply(0, {})
            return
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 200:
            self.last_ok = time.monotonic()
        self.on_reply(resp.status_code, body)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # the thread must outlive any single failure
                log.exception("heartbeat error")
        self._http.close()

    def stop(self) -> None:
        self.stopped.set()
