"""The `?` screen: every key, global and for the screen underneath."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

GLOBAL_KEYS = [
    ("1 … 6", "overview, workers, queues, jobs, locks, failover"),
    ("ctrl+p", "command palette (screens, refresh, pause)"),
    ("?", "this help"),
    ("q", "quit"),
    ("space", "pause or resume the live refresh"),
    ("ctrl+r", "refresh now"),
    ("tab", "move the focus"),
]
TABLE_KEYS = [
    ("↑ ↓ pgup pgdn", "move in a table (home/end or g/G: first/last row)"),
    ("enter", "open the detail (a queue: its jobs); a double click too"),
    ("/", "filter (jobs: search the server: 42, queue:q status:dead task:t)"),
    ("s / S", "sort by the next column / reverse (or click a header)"),
    ("escape", "close the filter, leave a detail"),
]


class HelpScreen(ModalScreen[None]):
    """Keys, in two tables: everywhere, and on the screen the help was opened from."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, screen_title: str, screen_keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.screen_title = screen_title
        self.screen_keys = screen_keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for title, keys in (("everywhere", GLOBAL_KEYS), ("tables", TABLE_KEYS),
                            (self.screen_title, self.screen_keys)):
            if not keys:
                continue
            table.add_row(f"[u]{title}[/u]", "")
            for key, what in keys:
                table.add_row(key, what)
            table.add_row("", "")
        with VerticalScroll(id="help-box"):
            yield Static(table)

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "qtui keys (escape closes)"

    def action_close(self) -> None:
        self.dismiss(None)
