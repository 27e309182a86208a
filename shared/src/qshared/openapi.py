"""The OpenAPI document, generated from the API schemas and each service's route table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from qshared import schemas as s


@dataclass(frozen=True)
class Op:
    """One documented operation."""

    method: str
    path: str
    summary: str
    owner: str
    body: type[BaseModel] | None = None
    reply: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = (400, 401)
    params: tuple[tuple[str, str, str], ...] = field(default=())  # (name, in, type)


_JOB_ID = (("job_id", "path", "integer"),)
_WORKER_ID = (("worker_id", "path", "string"),)
_LOCK_KEY = (("key", "path", "string"),)  # URL-encoded; 1..255 characters, no control ones
_QUEUE = (("queue", "path", "string"),)

OPERATIONS: tuple[Op, ...] = (
    Op("post", "/api/v1/jobs", "Enqueue one job", "scheduler", s.JobIn, s.EnqueuedOut, 201,
       (400, 401, 413)),
    Op("post", "/api/v1/jobs/batch", "Enqueue jobs in one transaction", "scheduler",
       s.JobBatchIn, s.BatchOut, 201, (400, 401, 413)),
    Op("get", "/api/v1/jobs/{job_id}", "A job with its assignment history", "scheduler",
       reply=s.JobDetailOut, errors=(400, 401, 404), params=_JOB_ID),
    Op("post", "/api/v1/jobs/{job_id}/cancel", "Cancel a job that has not started",
       "scheduler", reply=s.JobOut, errors=(400, 401, 404, 409), params=_JOB_ID),
    Op("post", "/api/v1/jobs/{job_id}/retry",
       "Run a dead or cancelled job again (one more attempt if they were used up)", "scheduler",
       reply=s.JobDetailOut, errors=(400, 401, 404, 409), params=_JOB_ID),
    Op("get", "/admin/queue/jobs", "Jobs by queue, state and task, newest first", "scheduler",
       reply=s.JobListOut, params=(("queue", "query", "string"), ("status", "query", "string"),
                                   ("task", "query", "string"), ("limit", "query", "integer"),
                                   ("before_id", "query", "integer"),
                                   ("before", "query", "integer"))),
    Op("post", "/admin/queue/jobs/retry", "Retry the matching dead or cancelled jobs",
       "scheduler", s.JobsBulkIn, s.JobsBulkOut),
    Op("post", "/admin/queue/jobs/cancel", "Cancel the matching pending or assigned jobs",
       "scheduler", s.JobsBulkIn, s.JobsBulkOut),
    Op("get", "/admin/queue/stats", "Per queue counts by state", "scheduler", reply=s.StatsOut),
    Op("get", "/admin/queue/throughput",
       "Outcomes per second and enqueue-to-start latency over the last `seconds`",
       "scheduler", reply=s.ThroughputOut, params=(("seconds", "query", "integer"),)),
    Op("get", "/api/v1/queues", "Every queue: counts by state and whether it is paused",
       "scheduler", reply=s.QueueListOut, errors=(401,)),
    Op("post", "/api/v1/queues/{queue}/pause", "Stop dispatching a queue's jobs", "scheduler",
       reply=s.QueuePausedOut, params=_QUEUE),
    Op("post", "/api/v1/queues/{queue}/resume", "Dispatch a paused queue's jobs again",
       "scheduler", reply=s.QueuePausedOut, params=_QUEUE),
    Op("post", "/api/v1/locks/{key}", "Take a lock (waiting up to wait_ms); a fencing token",
       "scheduler", s.LockAcquireIn, s.LockOut, errors=(400, 401, 409), params=_LOCK_KEY),
    Op("post", "/api/v1/locks/{key}/renew", "Extend a held lease; 409 when it was lost",
       "scheduler", s.LockRenewIn, s.LockOut, errors=(400, 401, 409), params=_LOCK_KEY),
    Op("post", "/api/v1/locks/{key}/release", "Release a held lock", "scheduler",
       s.LockReleaseIn, s.LockReleasedOut, errors=(400, 401, 409), params=_LOCK_KEY),
    Op("get", "/api/v1/locks/{key}", "The lock's live holder", "scheduler",
       reply=s.LockInfoOut, errors=(400, 401, 404), params=_LOCK_KEY),
    Op("get", "/admin/queue/locks", "Every lock row, live or expired", "scheduler",
       reply=s.LockListOut),
    Op("post", "/admin/queue/locks/clear-stale", "Delete expired lock rows", "scheduler",
       reply=s.LocksClearedOut, errors=(401,)),
    Op("post", "/api/v1/workers", "Register a worker", "registry", s.WorkerIn, s.RegisteredOut,
       201),
    Op("get", "/api/v1/workers", "Registered workers", "registry", reply=s.WorkerListOut,
       params=(("status", "query", "string"),)),
    Op("get", "/admin/queue/workers", "Registered workers (the specification's path)",
       "registry", reply=s.WorkerListOut, params=(("status", "query", "string"),)),
    Op("get", "/admin/queue/workers/validate",
       "The pool doctor: unserved queues, stale heartbeats, version and configuration skew, "
       "orphaned jobs, lock leaks, missing leaders, clock skew", "registry",
       reply=s.PoolReportOut, params=(("max_clock_skew_ms", "query", "number"),)),
    Op("get", "/admin/queue/workers/resources",
       "CPU, memory, in-flight jobs and loop lag per worker over the last `seconds`",
       "registry", reply=s.ResourceStatsOut, params=(("seconds", "query", "number"),)),
    Op("get", "/admin/queue/workers/config",
       "The pool's configuration: each worker's registration and pool-wide settings",
       "registry", reply=s.PoolConfigOut, params=(("all", "query", "boolean"),)),
    Op("get", "/api/v1/workers/stats", "Per worker assignments by outcome", "registry",
       reply=s.WorkerStatsListOut),
    Op("get", "/api/v1/workers/{worker_id}",
       "A worker with its recent health checks and its 20 latest assignments",
       "registry", reply=s.WorkerDetailOut, errors=(401, 404), params=_WORKER_ID),
    Op("post", "/api/v1/workers/{worker_id}/heartbeat", "Heartbeat with health figures",
       "registry", s.HeartbeatIn, s.HeartbeatOut, errors=(400, 401, 404, 409),
       params=_WORKER_ID),
    Op("post", "/api/v1/workers/{worker_id}/drain", "Ask a worker to drain", "registry",
       reply=s.WorkerOut, errors=(401, 404, 409), params=_WORKER_ID),
    Op("post", "/api/v1/workers/{worker_id}/stop", "Ask a worker to stop gracefully",
       "registry", reply=s.WorkerOut, errors=(401, 404, 409), params=_WORKER_ID),
    Op("delete", "/api/v1/workers/{worker_id}", "Deregister a worker", "registry",
       reply=s.WorkerOut, errors=(401, 404), params=_WORKER_ID),
    Op("get", "/admin/queue/failover", "Failover events, newest first", "failover",
       reply=s.FailoverEventListOut, params=(("worker_id", "query", "string"),
                                             ("limit", "query", "integer"))),
    Op("post", "/admin/queue/failover/recover", "Run a failover pass now", "failover",
       s.RecoverIn, s.RecoverOut),
    Op("post", "/admin/queue/failover/cleanup-crashed",
       "Recover crashed workers and jobs left on stopped ones", "failover", reply=s.RecoverOut),
    Op("post", "/admin/queue/failover/cleanup/health-checks",
       "Delete worker health checks older than `days`", "failover", s.CleanupDaysIn,
       s.CleanupOut, errors=(400, 401, 503)),
    Op("post", "/admin/queue/failover/cleanup/failover-events",
       "Delete failover events older than `days`", "failover", s.CleanupDaysIn, s.CleanupOut,
       errors=(400, 401, 503)),
    Op("post", "/admin/queue/failover/cleanup/orphaned-assignments",
       "Delete assignment rows of gone jobs; close open ones whose job moved on (body "
       "optional)", "failover", s.CleanupOrphansIn, s.CleanupOrphansOut,
       errors=(400, 401, 503)),
    Op("post", "/admin/queue/failover/cleanup/jobs",
       "Delete finished jobs (and their assignments) that finished more than `days` ago",
       "failover", s.CleanupJobsIn, s.CleanupJobsOut, errors=(400, 401, 503)),
    Op("get", "/admin/queue/failover/retention",
       "The retention policy, whether this replica runs the schedule, and its last run",
       "failover", reply=s.RetentionOut, errors=(401,)),
    Op("post", "/admin/queue/failover/retention/run",
       "Run every clean-up of the retention policy now (body optional)", "failover",
       s.RetentionRunIn, s.RetentionRunOut, errors=(400, 401, 503)),
    Op("get", "/health", "Health of the service and what was checked", "each",
       reply=s.HealthOut, errors=(503,)),
)


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": {400: "Bad input", 401: "Missing or wrong token", 404: "Not found",
                        409: "Conflict", 413: "Too large", 503: "Unavailable"}[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }


def openapi_document(owner: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one service (`owner`) or of the whole system."""
    ops = [op for op in OPERATIONS if owner is None or op.owner in (owner, "each")]
    wanted = {(s.ErrorOut, "serialization")}
    for op in ops:
        if op.body is not None:
            wanted.add((op.body, "validation"))
        if op.reply is not None:
            wanted.add((op.reply, "serialization"))
    refs, schema = models_json_schema(
        sorted(wanted, key=lambda p: (p[0].__name__, p[1])),
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry: dict[str, Any] = {
            "summary": op.summary, "tags": [op.owner],
            "responses": {str(op.status): {"description": "OK"}},
        }
        if op.reply is not None:
            entry["responses"][str(op.status)]["content"] = {
                "application/json": {"schema": refs[(op.reply, "serialization")]}
            }
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(op.body, "validation")]}}}
        for status in op.errors:
            entry["responses"][str(status)] = _error_response(status)
        if op.params:
            entry["parameters"] = [
                {"name": n, "in": where, "required": where == "path", "schema": {"type": t}}
                for n, where, t in op.params
            ]
        if op.path.startswith(("/api/", "/admin/")):
            entry["security"] = [{"bearer": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": f"qstack {owner or 'system'} API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
