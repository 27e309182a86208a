"""Producer and admin clients over HTTP, async (`AsyncClient`) and sync (`Client`).

Every endpoint is written once (in `_Endpoints`); the two classes differ only in how a
request is sent, so they cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import httpx

from qshared.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    QstackError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)

FINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})

_BY_STATUS: dict[int, type[QstackError]] = {
    400: ValidationFailed, 401: Unauthorized, 403: Forbidden, 404: NotFound,
    409: Conflict, 413: PayloadTooLarge, 422: ValidationFailed,
}


class ApiError(QstackError):
    """A service answered with an error status."""


def raise_for_response(resp: httpx.Response) -> Any:
    """The JSON body of a 2xx answer; any other raises the QstackError its status maps to."""
    if resp.status_code < 400:
        return resp.json() if resp.content else None
    try:
        err = resp.json()["error"]
        code, message = err["code"], err["message"]
    except Exception:
        code, message = "http_error", resp.text[:300] or resp.reason_phrase
    cls = _BY_STATUS.get(resp.status_code)
    if cls is None:
        cls = ServiceUnavailable if resp.status_code >= 500 else ApiError
    exc = cls(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {message}")
    exc.code = code
    exc.status = resp.status_code
    raise exc


def job_body(
    task: str, payload: Any = None, *, queue: str | None = None, priority: int = 0,
    delay_s: float | None = None, run_at: datetime | None = None,
    max_attempts: int | None = None, timeout_s: float | None = None,
    unique_key: str | None = None, lock_key: str | None = None,
) -> dict[str, Any]:
    """The JSON body of one job; unset options are left out."""
    body: dict[str, Any] = {"task": task, "payload": payload, "priority": priority}
    for key, value in (
        ("queue", queue), ("delay_s", delay_s),
        ("run_at", run_at.isoformat() if run_at else None), ("max_attempts", max_attempts),
        ("timeout_s", timeout_s), ("unique_key", unique_key), ("lock_key", lock_key),
    ):
        if value is not None:
            body[key] = value
    return body


class _Endpoints:
    """The API, written once; `_send` is sync or async in the subclasses."""

    def _send(self, method: str, path: str, json: Any = None,
              params: dict[str, Any] | None = None,
              post: Callable[[Any], Any] = lambda b: b) -> Any:
        raise NotImplementedError

    # producer
    def enqueue(self, task: str, payload: Any = None, **options: Any) -> Any:
        """Submit one job. Returns: its id."""
        return self._send("POST", "/api/v1/jobs", job_body(task, payload, **options),
                          post=lambda b: b["id"])

    def enqueue_many(self, jobs: Iterable[dict[str, Any]]) -> Any:
        """Submit job bodies (see `job_body`) in one transaction. Returns: their ids."""
        return self._send("POST", "/api/v1/jobs/batch", {"jobs": list(jobs)},
                          post=lambda b: [j["id"] for j in b["jobs"]])

    def get_job(self, job_id: int) -> Any:
        """Returns: the job with its assignment history."""
        return self._send("GET", f"/api/v1/jobs/{job_id}")

    def cancel(self, job_id: int) -> Any:
        """Cancel a job that has not started. Returns: the job."""
        return self._send("POST", f"/api/v1/jobs/{job_id}/cancel")

    def retry(self, job_id: int) -> Any:
        """Run a dead or cancelled job again (one more attempt if they were used up).
        Returns: the job."""
        return self._send("POST", f"/api/v1/jobs/{job_id}/retry")

    def list_jobs(self, **filters: Any) -> Any:
        """Returns: jobs matching queue/status/task, newest first."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._send("GET", "/admin/queue/jobs", params=params, post=lambda b: b["jobs"])

    def stats(self) -> Any:
        """Returns: per queue counts by state."""
        return self._send("GET", "/admin/queue/stats", post=lambda b: b["queues"])

    def health(self) -> Any:
        """Returns: the service's /health body."""
        return self._send("GET", "/health")


class Client(_Endpoints):
    """Synchronous client of one qstack service (the scheduler, for producers)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _send(self, method, path, json=None, params=None, post=lambda b: b):
        try:
            resp = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{self._http.base_url}: {exc}") from exc
        return post(raise_for_response(resp))

    def request(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        """Any endpoint; errors raise the matching QstackError."""
        return self._send(method, path, json, params or None)

    def wait(self, job_id: int, timeout: float = 30.0, interval: float = 0.05) -> dict[str, Any]:
        """Poll until the job is final. Raises TimeoutError when it is not by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            time.sleep(interval)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Endpoints):
    """Asynchronous client of one qstack service."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    async def _send(self, method, path, json=None, params=None, post=lambda b: b):
        try:
            resp = await self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{self._http.base_url}: {exc}") from exc
        return post(raise_for_response(resp))

    async def request(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        """Any endpoint; errors raise the matching QstackError."""
        return await self._send(method, path, json, params or None)

    async def wait(
        self, job_id: int, timeout: float = 30.0, interval: float = 0.05
    ) -> dict[str, Any]:
        """Poll until the job is final. Raises TimeoutError when it is not by `timeout`."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if job["status"] in FINAL_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
