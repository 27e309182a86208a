"""Locks: holders, fencing tokens, expiry countdown; clear the stale (expired) rows."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from qtui import formatting as fmt
from qtui.messages import Action
from qtui.screens.base import DashboardScreen
from qtui.snapshot import Snapshot
from qtui.widgets.tables import Col, LiveTable


class LocksScreen(DashboardScreen):
    """Every distributed_locks row, live; expired rows are stale until cleared."""

    TITLE = "Locks"
    source = "scheduler"
    filterable = True

    BINDINGS = [
        Binding("slash", "open_filter", "Filter"),
        Binding("c", "clear_stale", "Clear stale"),
    ]

    def compose_body(self) -> ComposeResult:
        columns = [
            Col("key", "key", lambda lk: lk["key"]),
            Col("owner", "owner", lambda lk: lk["owner"]),
            Col("worker", "worker", lambda lk: lk.get("worker_id") or "-"),
            Col("token", "token", lambda lk: str(lk["token"]), sort=lambda lk: lk["token"], right=True),
            Col("held", "held for", lambda lk: fmt.age(lk.get("acquired_at"), self.qtui.clock()),
                sort=lambda lk: -(fmt.epoch(lk.get("acquired_at")) or 0), right=True),
            Col("expires", "expires in", self._countdown, sort=self._remaining, right=True),
        ]
        yield Static(id="caption", classes="caption")
        yield LiveTable(columns, item_key=lambda lk: lk["key"], id="locks")

    def _remaining(self, lock: dict[str, Any]) -> float:
        """Seconds left now: the server's figure, less the time since it was fetched."""
        snapshot = self.qtui.snapshot
        return lock.get("expires_in_s", 0.0) - max(self.qtui.clock() - snapshot.taken_at, 0.0)

    def _countdown(self, lock: dict[str, Any]) -> Text:
        left = self._remaining(lock)
        if left <= 0:
            return Text(f"stale ({fmt.duration(-left)} ago)", style="bold red")
        return Text(fmt.duration(left), style="yellow" if left < 5 else "")

    def show(self, snapshot: Snapshot, now: float) -> None:
        table = self.query_one(LiveTable)
        table.show(snapshot.locks)
        stale = sum(1 for lk in snapshot.locks if self._remaining(lk) <= 0)
        self.query_one("#caption", Static).update(self.caption(
            snapshot, f"Locks {len(snapshot.locks)}, {stale} stale"))
        self.mark_stale(table, snapshot)

    def action_clear_stale(self) -> None:
        stale = [lk["key"] for lk in self.qtui.snapshot.locks if self._remaining(lk) <= 0]
        listed = ", ".join(stale[:5]) + (", …" if len(stale) > 5 else "")
        self.request(Action(
            "clear_stale_locks", label="clear stale locks",
            confirm=f"Delete every expired lock row? {len(stale)} listed now"
                    + (f": {listed}." if stale else "."),
        ))
