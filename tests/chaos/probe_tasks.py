"""Tasks for chaos tests: each execution is appended to QSTACK_PROBE_FILE (one line per run)."""

from __future__ import annotations

import asyncio
import os

from qworker import JobContext, task


@task(name="probe")
async def probe(payload, job: JobContext) -> int:
    """Sleeps payload seconds, then records `job_id pid` so runs can be counted."""
    await asyncio.sleep(float(payload or 0))
    with open(os.environ["QSTACK_PROBE_FILE"], "a") as f:  # noqa: ASYNC230 - one short line
        f.write(f"{job.id} {os.getpid()}\n")
    return os.getpid()
