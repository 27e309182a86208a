"""HTTP handlers of the scheduler: jobs, queues (statistics, pause), throughput, health."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from qscheduler import metrics
from qscheduler.dispatch import Dispatcher
from qscheduler.system_metrics import SystemMetrics
from qshared.config import Settings
from qshared.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from qshared.http import int_param, json_response, read_model
from qshared.schemas import (
    NAME_PATTERN,
    AssignmentOut,
    BatchOut,
    EnqueuedOut,
    JobBatchIn,
    JobDetailOut,
    JobIn,
    JobListOut,
    JobOut,
    JobsBulkIn,
    JobsBulkOut,
    LatencyOut,
    QueueListOut,
    QueueOut,
    QueuePausedOut,
    QueueStatsOut,
    StatsOut,
    ThroughputBucketOut,
    ThroughputOut,
)
from qshared.storage import Storage
from qshared.storage.base import (
    CANCELLABLE_STATES,
    JOB_STATES,
    RETRYABLE_STATES,
    JobFilter,
    NewJob,
)

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SYSTEM_METRICS = web.AppKey("system_metrics", SystemMetrics)

MAX_THROUGHPUT_WINDOW = 3600  # seconds
_QUEUE_NAME = re.compile(NAME_PATTERN)


def to_new_job(job: JobIn, settings: Settings, where: str = "payload") -> NewJob:
    """Validate what pydantic cannot (payload size) and apply the defaults."""
    payload = orjson.dumps(job.payload).decode()
    if len(payload) > settings.qstack_max_payload_bytes:
        raise PayloadTooLarge(
            f"{where} is {len(payload)} bytes; the limit is {settings.qstack_max_payload_bytes}"
            " (QSTACK_MAX_PAYLOAD_BYTES)"
        )
    return NewJob(
        queue_name=job.queue or settings.queue_default, task_name=job.task,
        payload_json=payload, priority=job.priority,
        max_attempts=job.max_attempts or settings.qstack_default_max_attempts,
        timeout=job.timeout_s or settings.qstack_default_timeout,
        delay_s=job.start_delay(), unique_key=job.unique_key, lock_key=job.lock_key,
    )


async def enqueue(request: web.Request) -> web.Response:
    body = await read_model(request, JobIn)
    new = to_new_job(body, request.app[SETTINGS])
    [res] = await request.app[STORAGE].enqueue([new])
    if res.created:
        metrics.JOBS_ENQUEUED.labels(queue_name=new.queue_name).inc()
    return json_response(EnqueuedOut(id=res.id, created=res.created), 201 if res.created else 200)


async def enqueue_batch(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await read_model(request, JobBatchIn)
    if len(body.jobs) > settings.qstack_max_batch:
        raise ValidationFailed(
            f"jobs: {len(body.jobs)} jobs in one batch; the limit is {settings.qstack_max_batch}"
        )
    new = [to_new_job(j, settings, f"jobs.{i}.payload") for i, j in enumerate(body.jobs)]
    results = await request.app[STORAGE].enqueue(new)
    counts: dict[str, int] = {}
    for job, res in zip(new, results, strict=True):
        if res.created:
            counts[job.queue_name] = counts.get(job.queue_name, 0) + 1
    for queue, n in counts.items():
        metrics.JOBS_ENQUEUED.labels(queue_name=queue).inc(n)
    out = BatchOut(jobs=[EnqueuedOut(id=r.id, created=r.created) for r in results])
    return json_response(out, status=201)


async def _job_detail(storage: Storage, row: dict[str, Any]) -> JobDetailOut:
    history = [AssignmentOut(**a) for a in await storage.job_assignments(row["id"])]
    return JobDetailOut(**JobOut.from_row(row).model_dump(), assignments=history)


async def get_job(request: web.Request) -> web.Response:
    job_id = int_param(request, "job_id")
    storage = request.app[STORAGE]
    row = await storage.get_job(job_id)
    if row is None:
        raise NotFound(f"no job with id {job_id}")
    return json_response(await _job_detail(storage, row))


async def retry_job(request: web.Request) -> web.Response:
    """A dead or cancelled job runs again (one more attempt when they were used up)."""
    job_id = int_param(request, "job_id")
    storage = request.app[STORAGE]
    row = await storage.retry_job(job_id)
    if row is None:
        current = await storage.get_job(job_id)
        if current is None:
            raise NotFound(f"no job with id {job_id}")
        raise Conflict(
            f"job {job_id} is {current['status']}; only dead or cancelled jobs can be retried"
        )
    return json_response(await _job_detail(storage, row))


async def _bulk(request: web.Request, action: str) -> web.Response:
    body = await read_model(request, JobsBulkIn)
    states = RETRYABLE_STATES if action == "retry" else CANCELLABLE_STATES
    if body.status is not None and body.status not in states:
        raise ValidationFailed(
            f"status: {action} acts on {' or '.join(states)} jobs, got {body.status!r}"
        )
    storage = request.app[STORAGE]
    act = storage.retry_jobs if action == "retry" else storage.cancel_jobs
    match = JobFilter(ids=body.ids, queue=body.queue, status=body.status, task=body.task)
    ids = await act(match, body.limit)
    return json_response(JobsBulkOut(count=len(ids), ids=ids))


async def retry_jobs(request: web.Request) -> web.Response:
    """Retry up to `limit` matching dead or cancelled jobs."""
    return await _bulk(request, "retry")


async def cancel_jobs(request: web.Request) -> web.Response:
    """Cancel up to `limit` matching pending or assigned jobs."""
    return await _bulk(request, "cancel")


async def cancel_job(request: web.Request) -> web.Response:
    job_id = int_param(request, "job_id")
    storage = request.app[STORAGE]
    cancelled = await storage.cancel_job(job_id)
    row = await storage.get_job(job_id)
    if row is None:
        raise NotFound(f"no job with id {job_id}")
    if not cancelled and row["status"] != "cancelled":
        raise Conflict(
            f"job {job_id} is {row['status']}; only pending or assigned jobs can be cancelled"
        )
    return json_response(JobOut.from_row(row))


async def list_jobs(request: web.Request) -> web.Response:
    q = request.query
    status = q.get("status")
    if status is not None and status not in JOB_STATES:
        raise ValidationFailed(f"status must be one of {', '.join(JOB_STATES)}, got {status!r}")
    limit = int_param(request, "limit") if "limit" in q else 100
    # `before_id` is the name the admin API contract uses; `before` came first
    before_key = "before_id" if "before_id" in q else "before"
    before = int_param(request, before_key) if before_key in q else None
    rows = await request.app[STORAGE].list_jobs(
        queue=q.get("queue"), status=status, task=q.get("task"), before_id=before,
        limit=min(limit, 1000),
    )
    return json_response(JobListOut(jobs=[JobOut.from_row(r) for r in rows]))


async def stats(request: web.Request) -> web.Response:
    rows = await request.app[STORAGE].queue_stats()
    out = StatsOut(queues=[QueueStatsOut(queue=r.pop("queue_name"), **r) for r in rows])
    return json_response(out)


async def list_queues(request: web.Request) -> web.Response:
    rows = await request.app[STORAGE].list_queues()
    return json_response(QueueListOut(queues=[QueueOut(queue=r.pop("queue_name"), **r)
                                              for r in rows]))


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    queue = request.match_info["queue"]
    if not _QUEUE_NAME.fullmatch(queue):
        raise ValidationFailed(
            f"queue must be 1-200 letters, digits or _.:- characters, got {queue!r}"
        )
    row = await request.app[STORAGE].set_queue_paused(queue, paused)
    return json_response(QueuePausedOut(queue=row["queue_name"], paused=row["paused"]))


async def pause_queue(request: web.Request) -> web.Response:
    """Stop dispatching the queue's jobs (enqueue goes on; started jobs finish)."""
    return await _set_paused(request, True)


async def resume_queue(request: web.Request) -> web.Response:
    """Dispatch the queue's jobs again, from now."""
    return await _set_paused(request, False)


async def throughput(request: web.Request) -> web.Response:
    seconds = int_param(request, "seconds") if "seconds" in request.query else 60
    if seconds > MAX_THROUGHPUT_WINDOW:
        raise ValidationFailed(f"seconds must be at most {MAX_THROUGHPUT_WINDOW}, got {seconds}")
    data = await request.app[STORAGE].throughput(seconds)
    return json_response(ThroughputOut(
        seconds=seconds, buckets=[ThroughputBucketOut(**b) for b in data["buckets"]],
        enqueue_to_start_ms=LatencyOut(**data["latency"]),
    ))


async def admin_metrics(request: web.Request) -> web.Response:
    """The specification's `/admin/metrics`: queue lengths, oldest pending age, workers."""
    body = await request.app[SYSTEM_METRICS].render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def health(request: web.Request) -> web.Response:
    storage = request.app[STORAGE]
    dispatcher = request.app[DISPATCHER]
    checks: dict[str, object] = {}
    ok = True
    try:
        await storage.ping()
        checks["database"] = "ok"
    except Exception as exc:  # /health reports, it does not raise
        checks["database"] = f"failing: {exc}"
        ok = False
    checks["dispatcher_leader"] = dispatcher.lease.is_leader
    checks["dispatcher_loop"] = "running" if dispatcher.running else "stopped"
    ok = ok and dispatcher.running
    if dispatcher.last_pass_at is not None:
        checks["last_dispatch_pass_age_s"] = round(time.monotonic() - dispatcher.last_pass_at, 3)
    body = {"status": "ok" if ok else "failing", "service": "scheduler", "checks": checks}
    return json_response(body, 200 if ok else 503)
