"""Helpers for end-to-end tests: free ports, SQL checks, polling."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(span: int = 30) -> int:
    """A base port whose next `span` ports are all free."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 100)
        if all(_port_free(base + i) for i in range(1, span)):
            return base
    raise RuntimeError("no free port range found")


class Db:
    """Synchronous SQL against the stack's database, for checking effects."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.url)
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(go())

    def value(self, sql: str, *args: Any) -> Any:
        rows = self.fetch(sql, *args)
        return next(iter(rows[0].values())) if rows else None


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def interrupt(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Ctrl-C a process started with start_new_session=True; SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
