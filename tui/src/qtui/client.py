"""The admin API over HTTP, async: one method per endpoint qtui uses (no textual here).

Every method returns plain JSON values (dicts and lists). A failure raises the qshared error
the answer maps to (`raise_for_response`), with `service` set to the service that failed and
its name at the start of the message, so the banner can say which one is down.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from qshared.errors import NotFound, QstackError, ServiceUnavailable

if TYPE_CHECKING:
    import httpx

SERVICES = ("registry", "scheduler", "failover")
# Refreshes must come back quickly (a hung service is reported as such); actions may take
# longer (a failover pass, a bulk retry of 10,000 jobs). (read, connect) seconds.
REFRESH_TIMEOUT = (2.0, 1.0)
ACTION_TIMEOUT = (15.0, 1.0)


def _load_http() -> tuple[ModuleType, ModuleType]:
    return importlib.import_module("httpx"), importlib.import_module("qshared.client")


def service_of(exc: BaseException) -> str | None:
    """The service a client error names, if any."""
    return getattr(exc, "service", None)


class AdminApi(Protocol):
    """What the app needs from a client; tests pass a fixed-data implementation."""

    urls: Mapping[str, str]

    async def system_health(self) -> dict[str, Any]: ...
    async def workers(self) -> list[dict[str, Any]]: ...
    async def worker(self, worker_id: str) -> dict[str, Any]: ...
    async def drain_worker(self, worker_id: str) -> dict[str, Any]: ...
    async def stop_worker(self, worker_id: str) -> dict[str, Any]: ...
    async def deregister_worker(self, worker_id: str) -> dict[str, Any]: ...
    async def scheduler_health(self) -> dict[str, Any]: ...
    async def queues(self) -> list[dict[str, Any]]: ...
    async def pause_queue(self, queue: str) -> dict[str, Any]: ...
    async def resume_queue(self, queue: str) -> dict[str, Any]: ...
    async def throughput(self, seconds: int = 60) -> dict[str, Any] | None: ...
    async def jobs(self, *, queue: str | None = None, status: str | None = None,
                   task: str | None = None, limit: int = 200) -> list[dict[str, Any]]: ...
    async def job(self, job_id: int) -> dict[str, Any]: ...
    async def retry_job(self, job_id: int) -> dict[str, Any]: ...
    async def cancel_job(self, job_id: int) -> dict[str, Any]: ...
    async def bulk_retry(self, **selector: Any) -> dict[str, Any]: ...
    async def bulk_cancel(self, **selector: Any) -> dict[str, Any]: ...
    async def locks(self) -> list[dict[str, Any]]: ...
    async def clear_stale_locks(self) -> dict[str, Any]: ...
    async def failover_health(self) -> dict[str, Any]: ...
    async def failover_events(self, limit: int = 100) -> list[dict[str, Any]]: ...
    async def recover(self, force: bool = False) -> dict[str, Any]: ...
    async def alerts(self) -> list[dict[str, Any]] | None: ...
    async def aclose(self) -> None: ...


class AdminClient:
    """The qstack admin API: one base URL per service (the same gateway URL for all works)."""

    def __init__(
        self, *, scheduler_url: str, registry_url: str, failover_url: str,
        token: str | None = None, prometheus_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.urls: dict[str, str] = {
            "registry": registry_url.rstrip("/"), "scheduler": scheduler_url.rstrip("/"),
            "failover": failover_url.rstrip("/"),
        }
        if prometheus_url:
            self.urls["prometheus"] = prometheus_url.rstrip("/")
        self._token = token
        self._transport = transport
        self._http: dict[str, httpx.AsyncClient] | None = None
        self._loading: asyncio.Future[tuple[ModuleType, ModuleType]] | None = None
        self._httpx: ModuleType | None = None
        self._raise_for_response: Any = None

    async def _clients(self) -> dict[str, httpx.AsyncClient]:
        """The HTTP clients, made on first use.

        httpx is imported then, in a thread: it is a third of qtui's start-up time, and the
        first screen can be painted while it loads.
        """
        if self._http is None:
            if self._loading is None:
                self._loading = asyncio.ensure_future(asyncio.to_thread(_load_http))
            httpx, shared_client = await asyncio.shield(self._loading)
            if self._http is None:
                self._httpx, self._raise_for_response = httpx, shared_client.raise_for_response
                headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
                read, connect = REFRESH_TIMEOUT
                self._http = {
                    name: httpx.AsyncClient(
                        base_url=url, headers=headers if name != "prometheus" else {},
                        timeout=httpx.Timeout(read, connect=connect), transport=self._transport,
                    )
                    for name, url in self.urls.items()
                }
        return self._http

    async def _call(self, service: str, method: str, path: str, *, json: Any = None,
                    params: dict[str, Any] | None = None, action: bool = False,
                    health: bool = False) -> Any:
        """One request; errors name the service. `health`: a 503 with a health body is data."""
        http = (await self._clients())[service]
        httpx = self._httpx
        assert httpx is not None
        read, connect = ACTION_TIMEOUT
        try:
            resp = await http.request(
                method, path, json=json, params=params,
                timeout=httpx.Timeout(read, connect=connect) if action else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            err = ServiceUnavailable(
                f"{service}: {self.urls[service]} unreachable ({str(exc) or type(exc).__name__})")
            err.service = service  # type: ignore[attr-defined]
            raise err from exc
        if health and resp.status_code == 503:
            try:
                body = resp.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "status" in body:
                return body
        try:
            return self._raise_for_response(resp)
        except QstackError as exc:
            err = type(exc)(f"{service}: {exc.message}", code=exc.code)
            err.status = exc.status
            err.service = service  # type: ignore[attr-defined]
            raise err from exc
        except ValueError as exc:  # a 2xx that is not JSON: a wrong URL (a proxy's HTML page)
            err = ServiceUnavailable(f"{service}: {resp.request.url} answered with no JSON")
            err.service = service  # type: ignore[attr-defined]
            raise err from exc

    # -- registry ------------------------------------------------------------------------
    async def system_health(self) -> dict[str, Any]:
        """The registry's system-wide /health: workers by status, leaders, the database."""
        return await self._call("registry", "GET", "/health", health=True)

    async def workers(self) -> list[dict[str, Any]]:
        return (await self._call("registry", "GET", "/api/v1/workers"))["workers"]

    async def worker(self, worker_id: str) -> dict[str, Any]:
        """A worker with its recent health checks and (newer registries) assignments."""
        return await self._call("registry", "GET", f"/api/v1/workers/{worker_id}")

    async def drain_worker(self, worker_id: str) -> dict[str, Any]:
        return await self._call("registry", "POST", f"/api/v1/workers/{worker_id}/drain", action=True)

    async def stop_worker(self, worker_id: str) -> dict[str, Any]:
        return await self._call("registry", "POST", f"/api/v1/workers/{worker_id}/stop", action=True)

    async def deregister_worker(self, worker_id: str) -> dict[str, Any]:
        return await self._call("registry", "DELETE", f"/api/v1/workers/{worker_id}", action=True)

    # -- scheduler -----------------------------------------------------------------------
    async def scheduler_health(self) -> dict[str, Any]:
        return await self._call("scheduler", "GET", "/health", health=True)

    async def queues(self) -> list[dict[str, Any]]:
        """Per queue counts and whether it is paused; older schedulers: the stats, unpaused."""
        try:
            return (await self._call("scheduler", "GET", "/api/v1/queues"))["queues"]
        except NotFound:
            stats = (await self._call("scheduler", "GET", "/admin/queue/stats"))["queues"]
            return [{**q, "paused": False} for q in stats]

    async def pause_queue(self, queue: str) -> dict[str, Any]:
        return await self._call("scheduler", "POST", f"/api/v1/queues/{queue}/pause", action=True)

    async def resume_queue(self, queue: str) -> dict[str, Any]:
        return await self._call("scheduler", "POST", f"/api/v1/queues/{queue}/resume", action=True)

    async def throughput(self, seconds: int = 60) -> dict[str, Any] | None:
        """Finished attempts per second and enqueue→start latency; None where not served."""
        try:
            return await self._call("scheduler", "GET", "/admin/queue/throughput",
                                    params={"seconds": seconds})
        except NotFound:
            return None

    async def jobs(self, *, queue: str | None = None, status: str | None = None,
                   task: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Jobs matching every filter given, newest first."""
        params = {k: v for k, v in (("queue", queue), ("status", status), ("task", task),
                                    ("limit", limit)) if v is not None}
        return (await self._call("scheduler", "GET", "/admin/queue/jobs", params=params))["jobs"]

    async def job(self, job_id: int) -> dict[str, Any]:
        """A job with its assignment history."""
        return await self._call("scheduler", "GET", f"/api/v1/jobs/{job_id}")

    async def retry_job(self, job_id: int) -> dict[str, Any]:
        return await self._call("scheduler", "POST", f"/api/v1/jobs/{job_id}/retry", action=True)

    async def cancel_job(self, job_id: int) -> dict[str, Any]:
        return await self._call("scheduler", "POST", f"/api/v1/jobs/{job_id}/cancel", action=True)

    async def bulk_retry(self, **selector: Any) -> dict[str, Any]:
        """Retry the dead or cancelled jobs matching ids/queue/status/task: {count, ids}."""
        body = {k: v for k, v in selector.items() if v is not None}
        return await self._call("scheduler", "POST", "/admin/queue/jobs/retry", json=body, action=True)

    async def bulk_cancel(self, **selector: Any) -> dict[str, Any]:
        """Cancel the pending or assigned jobs matching ids/queue/status/task: {count, ids}."""
        body = {k: v for k, v in selector.items() if v is not None}
        return await self._call("scheduler", "POST", "/admin/queue/jobs/cancel", json=body, action=True)

    async def locks(self) -> list[dict[str, Any]]:
        return (await self._call("scheduler", "GET", "/admin/queue/locks"))["locks"]

    async def clear_stale_locks(self) -> dict[str, Any]:
        return await self._call("scheduler", "POST", "/admin/queue/locks/clear-stale", action=True)

    # -- failover ------------------------------------------------------------------------
    async def failover_health(self) -> dict[str, Any]:
        return await self._call("failover", "GET", "/health", health=True)

    async def failover_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return (await self._call("failover", "GET", "/admin/queue/failover",
                                 params={"limit": limit}))["events"]

    async def recover(self, force: bool = False) -> dict[str, Any]:
        """One failover pass now; `force` skips the guards against mass declarations."""
        return await self._call("failover", "POST", "/admin/queue/failover/recover",
                                json={"force": force}, action=True)

    # -- prometheus ----------------------------------------------------------------------
    async def alerts(self) -> list[dict[str, Any]] | None:
        """Prometheus's firing alerts; None when no Prometheus URL is configured."""
        if "prometheus" not in self.urls:
            return None
        body = await self._call("prometheus", "GET", "/api/v1/alerts")
        alerts = (body or {}).get("data", {}).get("alerts", [])
        return [a for a in alerts if a.get("state") == "firing"]

    async def aclose(self) -> None:
        for http in (self._http or {}).values():
            await http.aclose()
