"""The frame every dashboard screen shares: status bar, banner, body, filter bar, footer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from qtui.formatting import duration
from qtui.messages import Action, ActionRequested, DetailReady, DetailRequested
from qtui.snapshot import Snapshot
from qtui.widgets.chrome import Banner, StatusBar
from qtui.widgets.tables import FilterBar, LiveTable

if TYPE_CHECKING:
    from qtui.app import QtuiApp


def pairs_grid(pairs: list[tuple[Any, Any]]) -> Table:
    """Label/value pairs laid out two to a row (labels bold); an odd last pair stands alone."""
    grid = Table.grid(padding=(0, 2))
    for style in ("bold", "", "bold", ""):
        grid.add_column(style=style)
    for i in range(0, len(pairs), 2):
        grid.add_row(*pairs[i], *(pairs[i + 1] if i + 1 < len(pairs) else ("", "")))
    return grid


class DashboardScreen(Screen[None]):
    """A screen that shows (part of) the latest snapshot; subclasses fill the body.

    `source` names the service whose data the screen shows, for the stale marking.
    """

    TITLE: ClassVar[str] = ""
    source: ClassVar[str | None] = None
    filterable: ClassVar[bool] = False

    BINDINGS = [Binding("slash", "open_filter", "Filter", show=False)]

    @property
    def qtui(self) -> QtuiApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StatusBar(self.TITLE)
        yield Banner()
        yield from self.compose_body()
        if self.filterable:
            bar = FilterBar(placeholder=self.filter_hint(), id="filter")
            bar.display = False
            yield bar
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def filter_hint(self) -> str:
        return "filter: type to narrow the rows, enter to keep, escape to clear"

    def on_mount(self) -> None:
        self.apply(self.qtui.snapshot)

    def on_screen_resume(self) -> None:
        self.apply(self.qtui.snapshot)

    # -- data ----------------------------------------------------------------------------
    def apply(self, snapshot: Snapshot) -> None:
        """Show a snapshot: the chrome here, the body in `show`."""
        if not self.is_mounted:
            return
        now = self.qtui.clock()
        self.query_one(StatusBar).show(
            snapshot, context=self.qtui.context_name, interval=self.qtui.refresh_interval,
            now=now, paused=self.qtui.paused,
        )
        self.query_one(Banner).show(snapshot, now)
        self.show(snapshot, now)

    def show(self, snapshot: Snapshot, now: float) -> None:
        """Fill the body from the snapshot (subclasses)."""

    def caption(self, snapshot: Snapshot, text: str, service: str | None = None) -> Text:
        """A section title, with the stale marker when its service did not answer."""
        service = service or self.source
        out = Text(text, style="bold")
        if service and snapshot.stale(service):
            seen = snapshot.age(service)
            out.append(f"  STALE: {service} unreachable, data from "
                       f"{duration(seen) if seen is not None else '-'} ago", style="bold reverse")
        return out

    def mark_stale(self, widget: Any, snapshot: Snapshot, service: str | None = None) -> None:
        widget.set_class(snapshot.stale(service or self.source or ""), "-stale")

    def request(self, action: Action) -> None:
        """Ask the app to run an action (it confirms first when the action says so)."""
        self.post_message(ActionRequested(action))

    # -- filter --------------------------------------------------------------------------
    def action_open_filter(self) -> None:
        if not self.filterable:
            return
        bar = self.query_one(FilterBar)
        bar.display = True
        bar.focus()

    def on_input_changed(self, event: FilterBar.Changed) -> None:
        if isinstance(event.input, FilterBar):
            self.filter_changed(event.value)

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        bar = self.query_one(FilterBar)
        if event.cleared:
            bar.display = False
            self.filter_changed("")
        self.filter_submitted(bar.value)
        self.focus_main()

    def filter_changed(self, text: str) -> None:
        for table in self.query(LiveTable):
            table.set_filter(text, render=False)
        self.apply(self.qtui.snapshot)

    def filter_submitted(self, text: str) -> None:
        """Enter in the filter bar (the jobs screen searches the server here)."""

    def focus_main(self) -> None:
        tables = self.query(LiveTable)
        if tables:
            tables.first().focus()


class DetailScreen(DashboardScreen):
    """One object's detail, re-fetched on every refresh while shown (`kind`, `key`)."""

    kind: ClassVar[str] = ""
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, key: Any) -> None:
        super().__init__()
        self.key = key
        self.data: dict[str, Any] | None = None
        self.gone: str | None = None  # why the object can no longer be fetched (404)

    def apply(self, snapshot: Snapshot) -> None:
        super().apply(snapshot)
        # Not while its service is down (the banner says so already) or once it is gone.
        if self.is_mounted and self.gone is None and not snapshot.stale(self.source or ""):
            self.post_message(DetailRequested(self.kind, self.key))

    def on_detail_ready(self, message: DetailReady) -> None:
        if (message.kind, message.key) != (self.kind, self.key):
            return
        if message.data is None:
            self.gone = message.error or "not found"
            self.notify(f"{self.kind} {self.key}: {self.gone}", severity="warning")
            return
        self.data = message.data
        try:
            self.show_detail(message.data, self.qtui.clock())
        except Exception as exc:  # a bad value must not kill the dashboard
            self.qtui.report(f"showing {self.kind} {self.key}", exc)

    def show_detail(self, data: dict[str, Any], now: float) -> None:
        """Fill the body from the fetched object (subclasses)."""

    def action_back(self) -> None:
        self.app.pop_screen()


class Section(Static):
    """A titled text block (the overview's panels, the detail screens' fields)."""

    def __init__(self, title: str = "", *, id: str | None = None, classes: str = "") -> None:
        super().__init__(id=id, classes=f"section {classes}".strip())
        self.border_title = title
