"""The qtui App: screens as modes (a key each), a refresh worker, actions in workers.

All I/O runs in workers started here and comes back as messages; every worker error (and
any failure to show data) is reported in one place, `report`, so nothing kills the app.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from qshared.errors import NotFound
from qtui.client import AdminApi
from qtui.messages import (
    Action,
    ActionDone,
    ActionRequested,
    DetailReady,
    DetailRequested,
    JobQueryChanged,
    SnapshotReady,
)
from qtui.screens.base import DashboardScreen, DetailScreen
from qtui.screens.confirm import ConfirmScreen
from qtui.screens.failover import FailoverScreen, recover_summary
from qtui.screens.help import HelpScreen
from qtui.screens.jobs import JobsScreen
from qtui.screens.locks import LocksScreen
from qtui.screens.overview import OverviewScreen
from qtui.screens.queues import QueuesScreen
from qtui.screens.workers import WorkersScreen
from qtui.snapshot import JobQuery, ServiceState, Snapshot, refresh

SCREENS = {
    "overview": ("1", "Overview", "workers, throughput, queues, leaders, failovers, alerts"),
    "workers": ("2", "Workers", "every worker: drain, stop, deregister"),
    "queues": ("3", "Queues", "counts by state, rates: pause and resume"),
    "jobs": ("4", "Jobs", "search, detail, retry and cancel, one or in bulk"),
    "locks": ("5", "Locks", "holders, fencing tokens, expiry: clear stale"),
    "failover": ("6", "Failover", "failover events: run a recovery pass"),
}


class QtuiApp(App[None]):
    """The qstack dashboard."""

    CSS_PATH = "app.tcss"
    TITLE = "qtui"
    MODES = {
        "overview": OverviewScreen, "workers": WorkersScreen, "queues": QueuesScreen,
        "jobs": JobsScreen, "locks": LocksScreen, "failover": FailoverScreen,
    }
    DEFAULT_MODE = "overview"
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    BINDINGS = [
        *(Binding(key, f"show('{mode}')", title, show=False) for mode, (key, title, _) in SCREENS.items()),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("space", "toggle_pause", "Pause", show=False),
        Binding("ctrl+r", "refresh_now", "Refresh", show=False),
    ]

    def __init__(self, client: AdminApi, *, refresh_interval: float = 1.0,
                 clock: Callable[[], float] = time.time, context_name: str | None = None,
                 live: bool = True) -> None:
        super().__init__()
        self.client = client
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.context_name = context_name
        self.live = live
        self.paused = False
        self.job_query = JobQuery()
        self.snapshot = Snapshot(services={
            name: ServiceState(name, url) for name, url in client.urls.items()})
        self.errors: list[str] = []  # every error reported, newest last (tests read it)
        self.ui_seconds = 0.0  # how long showing the last snapshot took (the UI's share)
        self._refreshing = False
        self._again = False  # a forced refresh asked while one was running: run it after

    def on_mount(self) -> None:
        self._size_console()
        if self.live:
            self.set_interval(self.refresh_interval, self.refresh_data)
        self.refresh_data()

    def on_resize(self) -> None:
        self._size_console()

    def _size_console(self) -> None:
        # Tables measure every new cell with the app's Rich console; with no size of its own
        # it asks the OS for the terminal's size on each measure (3 system calls a cell).
        self.console.size = (self.size.width, self.size.height)

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # -- refresh -------------------------------------------------------------------------
    def refresh_data(self, *, force: bool = False) -> Worker[None] | None:
        """Start a refresh unless one is running (or the refresh is paused)."""
        if self.paused and not force:
            return None
        if self._refreshing:
            self._again = self._again or force
            return None
        self._refreshing = True
        return self._refresh()

    @work(group="refresh", exit_on_error=False)
    async def _refresh(self) -> None:
        try:
            snapshot = await refresh(self.client, self.snapshot, self.job_query, self.clock())
        except BaseException:
            self._refreshing = False
            raise
        self.post_message(SnapshotReady(snapshot))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        # The next refresh starts from this one's snapshot, so only now is it over.
        self._refreshing = False
        self.snapshot = message.snapshot
        started = time.perf_counter()
        self._show(self.snapshot)
        self.ui_seconds = time.perf_counter() - started
        if self._again:
            self._again = False
            self.refresh_data(force=True)

    def _show(self, snapshot: Snapshot) -> None:
        """Hand the snapshot to the top-most dashboard screen (modals sit above it)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, DashboardScreen):
                try:
                    screen.apply(snapshot)
                except Exception as exc:  # a bad value must not kill the dashboard
                    self.report(f"showing {screen.TITLE}", exc)
                return

    # -- details -------------------------------------------------------------------------
    def on_detail_requested(self, message: DetailRequested) -> None:
        self._load_detail(message.kind, message.key)

    @work(group="detail", exit_on_error=False)
    async def _load_detail(self, kind: str, key: Any) -> None:
        fetch = self.client.worker if kind == "worker" else self.client.job
        try:
            reply = DetailReady(kind, key, await fetch(key))
        except NotFound as exc:
            reply = DetailReady(kind, key, None, error=str(exc))
        for screen in self.screen_stack:
            if isinstance(screen, DetailScreen) and (screen.kind, screen.key) == (kind, key):
                screen.post_message(reply)

    # -- actions -------------------------------------------------------------------------
    def on_action_requested(self, message: ActionRequested) -> None:
        action = message.action
        if action.confirm is None:
            self.start_action(action)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.start_action(action)

        self.push_screen(ConfirmScreen(action.confirm, title=action.label or "Confirm"), answered)

    def start_action(self, action: Action) -> Worker[None]:
        return self._act(action)

    @work(group="action", exit_on_error=False)
    async def _act(self, action: Action) -> None:
        result = await getattr(self.client, action.op)(*action.args, **(action.kwargs or {}))
        self.post_message(ActionDone(action, result))

    def on_action_done(self, message: ActionDone) -> None:
        try:
            text = self._done_text(message.action, message.result)
        except Exception:  # an answer of an unexpected shape: the action still succeeded
            text = message.action.label or message.action.op
        self.notify(text, title="done")
        self.refresh_data(force=True)

    @staticmethod
    def _done_text(action: Action, result: Any) -> str:
        if action.op == "recover" and isinstance(result, dict):
            return f"{action.label}: {recover_summary(result)}"
        if isinstance(result, dict) and "count" in result:
            return f"{action.label}: {result['count']} jobs"
        if action.op == "clear_stale_locks" and isinstance(result, dict):
            return f"{action.label}: {result.get('cleared', 0)} cleared"
        if isinstance(result, dict) and "status" in result:
            return f"{action.label}: now {result['status']}"
        if isinstance(result, dict) and "paused" in result:
            return f"{action.label}: {'paused' if result['paused'] else 'running'}"
        return action.label or action.op

    # -- the one place errors are reported -----------------------------------------------
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            what = {"refresh": "refresh", "detail": "loading the detail",
                    "action": "the action"}.get(event.worker.group, event.worker.name)
            self.report(what, event.worker.error)

    def report(self, what: str, error: BaseException) -> None:
        """Say that something failed (a notification), and keep going."""
        message = f"{what} failed: {error}"
        self.errors.append(message)
        self.log.error(message)
        self.notify(message, severity="error", timeout=8)

    # -- navigation ----------------------------------------------------------------------
    def action_show(self, mode: str) -> None:
        self.switch_mode(mode)

    def on_job_query_changed(self, message: JobQueryChanged) -> None:
        self.job_query = message.query
        self._show(self.snapshot)
        self.refresh_data(force=True)

    def action_help(self) -> None:
        screen = self.screen
        keys = [(self.get_key_display(b), b.description) for b in screen.BINDINGS
                if isinstance(b, Binding) and b.description]
        title = screen.TITLE if isinstance(screen, DashboardScreen) else "this screen"
        self.push_screen(HelpScreen(title or "this screen", keys))

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.notify("live refresh paused (space resumes)" if self.paused else "live refresh resumed")
        self._show(self.snapshot)

    def action_refresh_now(self) -> None:
        self.refresh_data(force=True)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for mode, (key, title, help_text) in SCREENS.items():
            yield SystemCommand(f"{title} ({key})", help_text, lambda m=mode: self.switch_mode(m))
        yield SystemCommand("Refresh now (ctrl+r)", "Fetch everything again now", self.action_refresh_now)
        yield SystemCommand("Pause or resume refresh (space)", "Freeze the data on screen",
                            self.action_toggle_pause)
        yield SystemCommand("Help (?)", "Every key", self.action_help)
        yield from super().get_system_commands(screen)
