"""qtui's HTTP client against real HTTP servers: errors name the service, fallbacks, alerts."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from qshared.errors import Conflict, ServiceUnavailable, Unauthorized
from qtui.client import AdminClient, service_of
from qtui.snapshot import JobQuery, Snapshot, refresh


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def reply(body: object) -> Callable[[web.Request], object]:
    """A handler answering this JSON body."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body)

    return handler


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    """serve(routes) -> the base URL of a real HTTP server answering them."""
    servers: list[TestServer] = []

    async def start(routes: list[web.RouteDef]) -> str:
        app = web.Application()
        app.add_routes(routes)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


async def test_an_unreachable_service_is_named():
    client = AdminClient(scheduler_url=closed_port_url(), registry_url=closed_port_url(),
                         failover_url=closed_port_url())
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await client.workers()
        assert service_of(caught.value) == "registry"
        assert str(caught.value).startswith("registry: http://127.0.0.1:")
    finally:
        await client.aclose()


async def test_error_answers_keep_their_class_and_name_the_service(serve):
    seen: list[str | None] = []

    async def workers(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return error(401, "unauthorized", "missing or wrong bearer token")

    async def cancel(request: web.Request) -> web.Response:
        return error(409, "conflict", "job 7 is running")

    async def health(request: web.Request) -> web.Response:  # a failing system still answers
        return web.json_response({"status": "failing", "service": "registry",
                                  "checks": {"dispatcher_leader": None}}, status=503)

    url = await serve([web.get("/api/v1/workers", workers), web.get("/health", health),
                       web.post("/api/v1/jobs/7/cancel", cancel)])
    client = AdminClient(scheduler_url=url, registry_url=url, failover_url=url, token="t0k")
    try:
        with pytest.raises(Unauthorized, match=r"^registry: .*401 missing or wrong bearer token"):
            await client.workers()
        assert seen == ["Bearer t0k"]
        with pytest.raises(Conflict) as caught:
            await client.cancel_job(7)
        assert service_of(caught.value) == "scheduler" and caught.value.status == 409
        assert (await client.system_health())["status"] == "failing"
    finally:
        await client.aclose()


async def test_older_schedulers_fall_back_to_stats_and_no_throughput(serve):
    stats = {"queues": [{"queue": "default", "pending": 1, "scheduled": 0, "assigned": 0, "running": 0,
                         "succeeded": 5, "failed": 0, "dead": 0, "cancelled": 0,
                         "oldest_pending_age_s": 0.5}]}

    async def not_found(request: web.Request) -> web.Response:
        return error(404, "not_found", "no such route")

    url = await serve([web.get("/api/v1/queues", not_found),
                       web.get("/admin/queue/throughput", not_found),
                       web.get("/admin/queue/stats", reply(stats))])
    client = AdminClient(scheduler_url=url, registry_url=url, failover_url=url)
    try:
        assert await client.queues() == [{**stats["queues"][0], "paused": False}]
        assert await client.throughput() is None
    finally:
        await client.aclose()


async def test_prometheus_alerts_are_the_firing_ones_and_get_no_token(serve):
    headers: list[str | None] = []

    async def alerts(request: web.Request) -> web.Response:
        headers.append(request.headers.get("Authorization"))
        return web.json_response({"status": "success", "data": {"alerts": [
            {"labels": {"alertname": "A"}, "state": "firing"},
            {"labels": {"alertname": "B"}, "state": "pending"}]}})

    url = await serve([web.get("/api/v1/alerts", alerts)])
    client = AdminClient(scheduler_url=url, registry_url=url, failover_url=url, token="secret",
                         prometheus_url=url + "/")
    plain = AdminClient(scheduler_url=url, registry_url=url, failover_url=url)
    try:
        assert [a["labels"]["alertname"] for a in await client.alerts()] == ["A"]
        assert headers == [None]
        assert await plain.alerts() is None and "prometheus" not in plain.urls
    finally:
        await client.aclose()
        await plain.aclose()


async def test_a_refresh_keeps_what_a_down_service_had_and_fills_the_rest(serve):
    """The data layer over the real client: the registry's port is closed, the rest answers."""
    body = {"queues": []}
    url = await serve([
        web.get("/health", reply({"status": "ok", "service": "x", "checks": {}})),
        web.get("/api/v1/queues", reply(body)),
        web.get("/admin/queue/throughput", reply(
            {"seconds": 60, "buckets": [], "enqueue_to_start_ms": {"p50": None, "p99": None, "samples": 0}})),
        web.get("/admin/queue/jobs", reply({"jobs": []})),
        web.get("/admin/queue/locks", reply({"locks": []})),
        web.get("/admin/queue/failover", reply({"events": []})),
    ])
    client = AdminClient(scheduler_url=url, registry_url=closed_port_url(), failover_url=url)
    before = Snapshot(workers=[{"id": "w1"}], loaded=True, taken_at=100.0)
    try:
        after = await refresh(client, before, JobQuery(), now=110.0)
    finally:
        await client.aclose()
    assert after.workers == [{"id": "w1"}] and after.stale("registry")
    assert after.services["registry"].unreachable and after.services["registry"].failing_since == 110.0
    assert not after.stale("scheduler") and not after.stale("failover")
    assert after.throughput is not None and after.events == [] and after.taken_at == 110.0
