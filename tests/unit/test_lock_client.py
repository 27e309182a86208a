"""The lock client's own logic (renewal, loss, release, encoding) against a scripted server."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

import httpx
import pytest

from qshared.errors import Conflict
from qshared.locks import LockLost, Locks, default_owner

EXPIRES = "2030-01-01T00:00:00+00:00"


class Server:
    """A scripted lock manager: records requests; `renew` decides each renewal's answer."""

    def __init__(self, renew: Callable[[int], httpx.Response] | None = None,
                 release: httpx.Response | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.renew = renew or (lambda _n: httpx.Response(200, json={"expires_at": EXPIRES}))
        self.release = release or httpx.Response(200, json={"released": True})
        self.renewals = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.raw_path.decode()
        self.calls.append((path, body))
        if path.endswith("/renew"):
            self.renewals += 1
            return self.renew(self.renewals)
        if path.endswith("/release"):
            return self.release
        return httpx.Response(200, json={"key": "k", "owner": body["owner"], "token": 7,
                                         "expires_at": EXPIRES})

    def paths(self, suffix: str) -> list[tuple[str, dict]]:
        return [c for c in self.calls if c[0].endswith(suffix)]


def locks_for(server: Server) -> Locks:
    return Locks("http://scheduler", "t", transport=httpx.MockTransport(server))


def conflict(message: str, code: str) -> httpx.Response:
    return httpx.Response(409, json={"error": {"code": code, "message": message}})


async def test_hold_renews_every_third_of_the_ttl_and_releases_with_its_token():
    server = Server()
    async with locks_for(server) as locks:
        async with locks.hold("report:42", ttl=0.3) as token:
            await asyncio.sleep(0.45)
    assert token == 7
    assert 3 <= server.renewals <= 5  # at about 0.1, 0.2, 0.3 and 0.4 s
    [(path, body)] = server.paths("/release")
    assert path == "/api/v1/locks/report%3A42/release"
    assert body["token"] == 7
    renewal = server.paths("/renew")[0][1]
    assert renewal == {"owner": body["owner"], "token": 7, "ttl_ms": 300}


async def test_a_lost_renewal_is_seen_in_the_block_and_raised_on_exit_without_a_release():
    server = Server(renew=lambda _n: conflict("lock lost: 'k' is no longer held", "lock_lost"))
    async with locks_for(server) as locks:
        hold = locks.hold("k", ttl=0.15)
        with pytest.raises(LockLost, match="lock lost"):
            async with hold:
                await asyncio.sleep(0.1)
                assert isinstance(hold.lost, LockLost)
    assert server.renewals == 1  # it stops renewing a lost lock
    assert server.paths("/release") == []


async def test_renewals_that_never_get_through_lose_the_lock_when_the_lease_ends():
    def unreachable(_n: int) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    server = Server(renew=unreachable)
    async with locks_for(server) as locks:
        hold = locks.hold("k", ttl=0.2)
        with pytest.raises(LockLost, match="no renewal got through"):
            async with hold:
                await asyncio.sleep(0.35)
                assert hold.lost is not None
    assert server.renewals >= 2  # retried while the lease lasted


async def test_a_transient_renewal_failure_is_retried_and_the_lock_kept():
    def flaky(n: int) -> httpx.Response:
        if n == 1:
            return httpx.Response(503, json={"error": {"code": "storage_unavailable",
                                                       "message": "db down"}})
        return httpx.Response(200, json={"expires_at": EXPIRES})

    server = Server(renew=flaky)
    async with locks_for(server) as locks:
        hold = locks.hold("k", ttl=0.3)
        async with hold:
            await asyncio.sleep(0.25)
        assert hold.lost is None
    assert server.renewals >= 2
    assert len(server.paths("/release")) == 1


async def test_a_refused_release_is_a_lock_lost_but_never_hides_an_error_in_the_block():
    server = Server(release=conflict("lock 'k' is not held by 'x' with token 7", "lock_not_held"))
    async with locks_for(server) as locks:
        with pytest.raises(LockLost, match="lost while held"):
            async with locks.hold("k", ttl=30):
                pass
        with pytest.raises(ValueError, match="boom") as info:
            async with locks.hold("k", ttl=30):
                raise ValueError("boom")
    assert any("lost while held" in note for note in info.value.__notes__)


async def test_acquire_sends_milliseconds_and_waits_longer_than_the_wait():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return conflict("lock 'a/b' is held by 'other' until 2030", "lock_held")

    async with Locks("http://s/", "t", timeout=5, transport=httpx.MockTransport(handler)) as locks:
        with pytest.raises(Conflict, match="held by 'other'") as info:
            await locks.acquire("a/b", owner="me", ttl=2.5, wait=20)
    assert not isinstance(info.value, LockLost)
    [request] = seen
    assert request.url.raw_path == b"/api/v1/locks/a%2Fb"
    assert json.loads(request.content) == {"owner": "me", "ttl_ms": 2500, "wait_ms": 20000}
    assert request.extensions["timeout"]["read"] == 25
    assert request.headers["Authorization"] == "Bearer t"


def test_the_default_owner_is_host_pid_random_and_differs_per_call():
    a, b = default_owner(), default_owner()
    assert a != b
    host, pid, rand = a.rsplit(":", 2)
    assert host and int(pid) == os.getpid() and len(rand) == 8
