"""qtui driven by the pilot on fixed data: keys, filter, sort, details, confirmations, outages."""

from __future__ import annotations

import re

import pytest
from fixtures import WORKERS, Clock, FixedClient, make_app, refresh, settle

from qtui.screens.base import DashboardScreen
from qtui.screens.confirm import ConfirmScreen
from qtui.screens.failover import FailoverScreen
from qtui.screens.help import HelpScreen
from qtui.screens.job_detail import JobDetailScreen
from qtui.screens.jobs import JobsScreen
from qtui.screens.locks import LocksScreen
from qtui.screens.overview import OverviewScreen
from qtui.screens.queues import QueuesScreen
from qtui.screens.worker_detail import WorkerDetailScreen
from qtui.screens.workers import WorkersScreen
from qtui.snapshot import JobQuery
from qtui.widgets.chrome import Banner
from qtui.widgets.tables import FilterBar, LiveTable


def table(app) -> LiveTable:
    return app.screen.query_one(LiveTable)


def ids(app, key: str = "id") -> list:
    return [item[key] for item in table(app).items]


async def test_number_keys_switch_screens_and_each_shows_its_data():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
        for key, screen, count in (("2", WorkersScreen, 6), ("3", QueuesScreen, 4), ("4", JobsScreen, 9),
                                   ("5", LocksScreen, 4), ("6", FailoverScreen, 4)):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, screen)
            assert len(table(app).items) == count
            assert app.focused is table(app)  # the keyboard goes straight to the table
        await pilot.press("1")
        assert isinstance(app.screen, OverviewScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, OverviewScreen)
        assert app.errors == []


async def test_command_palette_lists_the_screens_and_opens_one():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Overview (1)", "Workers (2)", "Queues (3)", "Jobs (4)", "Locks (5)", "Failover (6)"):
            assert title in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"Locks (5)")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, LocksScreen)


async def test_filter_narrows_the_rows_and_escape_restores_them():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "slash")
        assert isinstance(app.focused, FilterBar)
        await pilot.press(*"node-b")
        assert ids(app) == ["worker-b1", "worker-b2"]
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.focused is table(app)
        await refresh(pilot)
        assert ids(app) == ["worker-b1", "worker-b2"]  # a refresh keeps it
        await pilot.press("slash", "escape")
        assert len(ids(app)) == 6
        assert not app.screen.query_one(FilterBar).display


async def test_keys_typed_in_the_filter_are_text_not_commands():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "slash", "q", "1", "space", "d", "question_mark")
        assert app.is_running and isinstance(app.screen, WorkersScreen) and not app.paused
        assert app.screen.query_one(FilterBar).value == "q1 d?"


async def test_sort_by_key_and_by_header_click_and_reverse():
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        assert ids(app)[0] == "worker-a1"  # by id
        await pilot.press("s")  # next column: host
        assert [w["hostname"] for w in table(app).items] == sorted(w["hostname"] for w in WORKERS)
        await pilot.press("S")  # reversed
        assert table(app).items[0]["hostname"] == "node-c"
        # a click on the "cpu" header sorts by CPU (numerically), a second one reverses
        t = table(app)
        t.sort_by, t.reverse = 0, False
        x = sum(t._widths[:7]) + 1  # inside the 8th column, "cpu"
        await pilot.click(LiveTable, offset=(x, 0))
        await pilot.pause()
        assert t.cols[t.sort_by].key == "cpu"
        cpu = [w["cpu_percent"] for w in t.items]
        assert cpu == [0.0, 35.0, 41.5, 88.0, 97.0, None]  # None (no health yet) last
        await pilot.click(LiveTable, offset=(x, 0))
        await pilot.pause()
        assert t.reverse
        assert [w["cpu_percent"] for w in t.items] == [97.0, 88.0, 41.5, 35.0, 0.0, None]


async def test_the_cursor_follows_its_worker_when_the_order_changes():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "down", "down")
        assert table(app).selected["id"] == "worker-b1"
        client.data_workers.insert(0, {**client.data_workers[0], "id": "worker-0"})
        await refresh(pilot)
        assert ids(app)[0] == "worker-0"
        assert table(app).selected["id"] == "worker-b1"


async def test_worker_detail_shows_health_checks_and_assignments():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "enter")
        await settle(pilot)
        assert isinstance(app.screen, WorkerDetailScreen) and app.screen.key == "worker-a1"
        checks = app.screen.query_one("#checks", LiveTable)
        assignments = app.screen.query_one("#assignments", LiveTable)
        assert len(checks.items) == 6 and checks.items[0]["checked_at"] > checks.items[-1]["checked_at"]
        assert [a["job_id"] for a in assignments.items] == [1050, 1042, 1039]
        await pilot.press("escape")
        assert isinstance(app.screen, WorkersScreen)


async def test_drain_asks_first_and_no_means_nothing_happens():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "worker-a1" in app.screen.question
        await pilot.press("n")
        await settle(pilot)
        assert client.calls == []
        await pilot.press("d")
        await pilot.press("enter")  # the focus starts on "No"
        await settle(pilot)
        assert client.calls == []
        await pilot.press("d", "y")
        await settle(pilot)
        assert client.calls == [("drain_worker", ("worker-a1",), {})]
        assert isinstance(app.screen, WorkersScreen)
        row = next(w for w in table(app).items if w["id"] == "worker-a1")
        assert row["status"] == "draining"  # the refresh after the action shows it


async def test_stop_and_deregister_from_the_detail_screen_are_confirmed():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "down", "enter")
        await settle(pilot)
        await pilot.press("x", "y")
        await settle(pilot)
        await pilot.press("D")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#yes")
        await settle(pilot)
        assert client.calls == [("stop_worker", ("worker-a2",), {}),
                                ("deregister_worker", ("worker-a2",), {})]


async def test_a_refused_action_is_reported_and_the_app_goes_on():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("2", "end", "d", "y")  # worker-c2 is failed: 409
        await settle(pilot)
        assert client.calls == [("drain_worker", ("worker-c2",), {})]
        assert len(app.errors) == 1 and "worker-c2" in app.errors[0] and "failed" in app.errors[0]
        assert app.is_running


async def test_job_search_detail_retry_and_cancel():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4", "slash", *"status:dead", "enter")
        await settle(pilot)
        assert app.job_query == JobQuery(status="dead")
        assert ids(app) == [1042]
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, JobDetailScreen)
        error = str(app.screen.query_one("#job-error").render())
        assert "ConnectionRefusedError" in error and "Traceback" in error
        assert len(app.screen.query_one("#history", LiveTable).items) == 3
        await pilot.press("r")  # retry needs no confirmation
        await settle(pilot)
        assert client.calls[-1] == ("retry_job", (1042,), {})
        await pilot.press("escape", "slash", *"1051", "enter")
        await settle(pilot)
        assert ids(app) == [1051]
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert client.calls[-1] == ("cancel_job", (1051,), {})
        assert table(app).items[0]["status"] == "cancelled"


async def test_bulk_actions_act_on_the_search_and_need_one():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4", "R")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen) and client.calls == []
        await pilot.press("slash", *"queue:emails status:dead", "enter")
        await settle(pilot)
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        assert "queue:emails status:dead" in app.screen.question
        await pilot.press("y")
        await settle(pilot)
        await pilot.press("C", "y")
        await settle(pilot)
        assert client.calls == [
            ("bulk_retry", (), {"queue": "emails", "status": "dead", "limit": 1000}),
            ("bulk_cancel", (), {"queue": "emails", "status": "dead", "limit": 1000}),
        ]


async def test_pause_a_queue_then_open_its_jobs():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "p")  # not destructive: no confirmation
        await settle(pilot)
        assert client.calls == [("pause_queue", ("default",), {})]
        assert table(app).items[0]["paused"] is True
        await pilot.press("p")
        await settle(pilot)
        assert client.calls[-1] == ("resume_queue", ("default",), {})
        await pilot.press("down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        assert app.job_query == JobQuery(queue="emails")
        assert {j["queue"] for j in table(app).items} == {"emails"}


async def test_clear_stale_locks_and_recover_are_confirmed():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("5", "c")
        assert isinstance(app.screen, ConfirmScreen) and "invoice:7" in app.screen.question
        await pilot.press("y")
        await settle(pilot)
        assert "invoice:7" not in ids(app, "key")
        await pilot.press("6", "r", "y")
        await settle(pilot)
        await pilot.press("F", "y")
        await settle(pilot)
        assert client.calls == [("clear_stale_locks", (), {}), ("recover", (), {"force": False}),
                                ("recover", (), {"force": True})]


async def test_lock_expiry_counts_down_between_refreshes():
    clock = Clock()
    app = make_app(clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        report = next(lk for lk in table(app).items if lk["key"] == "report:42")
        screen = app.screen
        assert isinstance(screen, LocksScreen)
        assert screen._countdown(report).plain == "12s"
        clock.advance(5)
        assert screen._countdown(report).plain == "7.0s"
        clock.advance(10)
        assert screen._countdown(report).plain.startswith("stale")


async def test_registry_outage_banner_stale_data_and_recovery():
    client, clock = FixedClient(), Clock()
    app = make_app(client, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        banner = app.screen.query_one(Banner)
        assert not banner.display
        client.down.add("registry")
        clock.advance(12)
        await refresh(pilot)
        assert app.is_running and banner.display
        text = str(banner.render())
        assert "registry unreachable" in text and "12s ago" in text
        assert "scheduler" not in text and "failover" not in text
        assert len(table(app).items) == 6  # the last data stays
        assert table(app).has_class("-stale")
        assert "STALE" in str(app.screen.query_one("#caption").render())
        assert app.snapshot.stale("registry") and not app.snapshot.stale("scheduler")
        await pilot.press("3")  # the rest keeps working
        await settle(pilot)
        assert not table(app).has_class("-stale") and app.screen.query_one(Banner).display
        client.down.clear()
        clock.advance(3)
        await refresh(pilot)
        assert not app.screen.query_one(Banner).display
        await pilot.press("2")
        await settle(pilot)
        assert not app.screen.query_one(Banner).display and not table(app).has_class("-stale")


async def test_a_service_failing_with_an_unexpected_error_is_contained():
    client = FixedClient()

    async def broken(limit: int = 100):
        raise RuntimeError("boom")

    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        client.failover_events = broken  # type: ignore[method-assign]
        await refresh(pilot)
        assert app.is_running
        assert "failover failing" in str(app.screen.query_one(Banner).render())
        assert "boom" in str(app.screen.query_one(Banner).render())


async def test_data_that_breaks_a_screen_is_reported_not_fatal():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        client.data_workers.append({"id": "broken"})  # no hostname, no queues
        await refresh(pilot)
        assert app.is_running
        assert app.errors and "showing Workers" in app.errors[-1]


def _colours(svg: str) -> set[str]:
    return set(re.findall(r"(?:fill|color): ?#([0-9a-f]{6})", svg.lower()))


def _grey(hex_colour: str) -> bool:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (0, 2, 4))
    return max(r, g, b) - min(r, g, b) <= 4


async def test_no_color_is_respected(monkeypatch):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        coloured = _colours(app.export_screenshot())
    assert not all(map(_grey, coloured))  # colours are used normally

    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(FixedClient())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.no_color
        plain = _colours(app.export_screenshot())
        status = str(app.screen.query_one("#status-bar").render())
    assert all(map(_grey, plain)), sorted(plain)
    assert "●registry" in status  # what the colours said is in the text too (● up, ✖ down)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_every_screen_fits(size):
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for key in "123456":
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, DashboardScreen)
            assert app.screen.size == size
        assert app.errors == []


async def test_a_detail_screen_stays_quiet_while_its_service_is_down_or_its_object_gone():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "enter")
        await settle(pilot)
        client.down.add("registry")
        for _ in range(3):
            await refresh(pilot)
        assert app.errors == [] and app.screen.query_one(Banner).display
        assert isinstance(app.screen, WorkerDetailScreen) and app.screen.data is not None
        client.down.clear()
        await pilot.press("escape", "4", "enter")  # job 1051
        await settle(pilot)
        client.data_jobs = [j for j in client.data_jobs if j["id"] != 1051]  # retention took it
        for _ in range(3):
            await refresh(pilot)
        assert isinstance(app.screen, JobDetailScreen) and app.screen.gone
        assert app.errors == []


async def test_the_mouse_selects_opens_and_confirms():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.click(LiveTable, offset=(2, 3))  # the third row under the header
        assert table(app).selected["id"] == "worker-b1"
        await pilot.double_click(LiveTable, offset=(2, 2))
        await settle(pilot)
        assert isinstance(app.screen, WorkerDetailScreen) and app.screen.key == "worker-a2"
        await pilot.press("d")
        await pilot.click("#yes")
        await settle(pilot)
        assert client.calls == [("drain_worker", ("worker-a2",), {})]


async def test_the_client_is_closed_when_the_app_ends():
    client = FixedClient()
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
    assert client.closed
