"""qtui driven by the pilot against a running stack: every action reaches the services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from fixtures import refresh, settle
from stack_fixtures import on_each_database

from qshared.client import job_body
from qtui.app import QtuiApp
from qtui.client import AdminClient
from qtui.messages import ActionDone
from qtui.screens.confirm import ConfirmScreen
from qtui.widgets.chrome import Banner
from qtui.widgets.tables import FilterBar, LiveTable

pytestmark = [pytest.mark.e2e, on_each_database]


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=2, concurrency=2, queues=("default", "emails"))


def live_app(stack) -> QtuiApp:
    client = AdminClient(
        scheduler_url=stack.scheduler_url, registry_url=stack.registry_url,
        failover_url=stack.services["failover"].url, token=stack.token,
    )
    # Refreshed by the tests (as often as they like), not by a timer, so each step is exact.
    return QtuiApp(client, live=False, context_name="e2e")


async def until(pilot, predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Refresh until the predicate holds on what qtui shows."""
    deadline = time.monotonic() + timeout
    while True:
        await refresh(pilot)
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


def rows(app) -> list[dict]:
    return app.screen.query_one(LiveTable).items


def job_row(app, job_id: int) -> dict | None:
    return next((j for j in app.snapshot.jobs if j["id"] == job_id), None)


async def search(pilot, text: str) -> None:
    await pilot.press("4", "slash")
    pilot.app.screen.query_one(FilterBar).value = text
    await pilot.press("enter")
    await settle(pilot)


async def test_cancel_a_pending_job(stack):
    with stack.client() as producer:
        job_id = producer.enqueue("noop", delay_s=300)
    app = live_app(stack)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await search(pilot, str(job_id))
        assert [j["id"] for j in rows(app)] == [job_id] and rows(app)[0]["status"] == "pending"
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: (job_row(app, job_id) or {}).get("status") == "cancelled",
                    "the job to show as cancelled")
        assert app.errors == []


async def test_retry_of_a_dead_job_runs_it_again(stack):
    with stack.client() as producer:
        job_id = producer.enqueue("fail", max_attempts=1)
        assert producer.wait(job_id, timeout=30)["status"] == "dead"
    app = live_app(stack)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await search(pilot, f"id:{job_id}")
        assert rows(app)[0]["status"] == "dead" and rows(app)[0]["attempts"] == 1
        await pilot.press("r")  # no confirmation: retrying is not destructive
        await until(pilot, lambda: (job_row(app, job_id) or {}).get("attempts") == 2
                    and job_row(app, job_id)["status"] == "dead", "the second attempt to end")
        await pilot.press("enter")
        await settle(pilot)
        history = app.screen.query_one("#history", LiveTable).items
        assert [a["outcome"] for a in history] == ["dead", "dead"]
        assert app.errors == []


async def test_a_paused_queue_keeps_its_jobs_pending_until_resumed(stack):
    with stack.client() as producer:
        first = producer.enqueue("noop", queue="emails")
        assert producer.wait(first, timeout=30)["status"] == "succeeded"
    app = live_app(stack)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        app.screen.query_one(LiveTable).select_key("emails")
        await pilot.press("p")
        await until(pilot, lambda: any(q["queue"] == "emails" and q["paused"] for q in rows(app)),
                    "emails to show as paused")
        with stack.client() as producer:
            ids = producer.enqueue_many([job_body("noop", queue="emails") for _ in range(3)])
        await asyncio.sleep(2.0)  # ten dispatcher passes and more
        await search(pilot, "queue:emails status:pending")
        assert {j["id"] for j in rows(app)} >= set(ids)
        await pilot.press("3")
        await settle(pilot)
        app.screen.query_one(LiveTable).select_key("emails")
        await pilot.press("p")
        await search(pilot, "queue:emails status:succeeded")
        await until(pilot, lambda: set(ids) <= {j["id"] for j in app.snapshot.jobs},
                    "the jobs to run once resumed")
        assert app.errors == []


async def test_clear_a_stale_lock(stack):
    key = f"tui-test-{time.monotonic_ns()}"
    async with httpx.AsyncClient(base_url=stack.scheduler_url, timeout=10,
                                 headers={"Authorization": f"Bearer {stack.token}"}) as http:
        taken = await http.post(f"/api/v1/locks/{key}", json={"owner": "tui-test", "ttl_ms": 200})
        taken.raise_for_status()
    await asyncio.sleep(0.5)
    app = live_app(stack)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await until(pilot, lambda: any(lk["key"] == key and not lk["live"] for lk in rows(app)),
                    "the expired lock to be listed")
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen) and key in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: all(lk["key"] != key for lk in rows(app)), "the lock to go")
        assert app.errors == []


async def test_run_recovery(stack):
    done: list[ActionDone] = []
    app = live_app(stack)
    async with app.run_test(size=(120, 40),
                            message_hook=lambda m: done.append(m) if isinstance(m, ActionDone) else None
                            ) as pilot:
        await settle(pilot)
        await pilot.press("6", "r", "y")
        await settle(pilot)
        assert [d.action.op for d in done] == ["recover"]
        assert set(done[0].result) >= {"declared_dead", "jobs_recovered", "stale_locks"}
        assert app.errors == []


async def test_registry_killed_while_qtui_runs(stack):
    app = live_app(stack)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        shown = len(rows(app))
        assert shown >= 2
        stack.kill("registry")
        try:
            await until(pilot, lambda: app.screen.query_one(Banner).display, "the banner")
            assert "registry unreachable" in str(app.screen.query_one(Banner).render())
            assert app.is_running and len(rows(app)) == shown  # the last data stays, stale
            assert app.snapshot.stale("registry") and not app.snapshot.stale("scheduler")
        finally:
            await asyncio.to_thread(stack.restart, "registry")
        await until(pilot, lambda: not app.screen.query_one(Banner).display, "the banner to go")
        assert not app.snapshot.stale("registry")


async def test_drain_a_worker(stack):
    app = live_app(stack)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        active = [w["id"] for w in rows(app) if w["status"] == "active"]
        assert len(active) == 2
        app.screen.query_one(LiveTable).select_key(active[0])
        await pilot.press("d", "y")
        await until(pilot, lambda: any(w["id"] == active[0] and w["status"] == "draining"
                                       for w in rows(app)), "the row to show draining")
        assert app.errors == []
