"""The lines around every screen: the status bar on top and the unreachable-service banner."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from qtui.formatting import duration
from qtui.snapshot import Snapshot

SERVICE_ORDER = ("registry", "scheduler", "failover", "prometheus")


class StatusBar(Static):
    """Screen name, context, each service's reachability (● up, ✖ down), refresh age."""

    def __init__(self, title: str) -> None:
        super().__init__(id="status-bar")
        self.title = title

    def show(self, snapshot: Snapshot, *, context: str | None, interval: float, now: float,
             paused: bool = False) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f" {self.title} ", style="bold reverse")
        line.append(f" {context or 'no context'} ", style="bold")
        for name in SERVICE_ORDER:
            state = snapshot.services.get(name)
            if state is None:
                continue
            mark, style = ("●", "green") if state.ok else ("✖", "bold red")
            line.append(" ")
            line.append(mark, style=style)
            line.append(name)
        if not snapshot.loaded:
            line.append("  connecting…", style="italic")
        elif paused:
            line.append("  PAUSED", style="bold reverse")
            line.append(f" {duration(now - snapshot.taken_at)} ago", style="dim")
        else:
            line.append(f"  {duration(now - snapshot.taken_at)} ago", style="dim")
            line.append(f" /{interval:g}s", style="dim")
        self.update(line)


class Banner(Static):
    """Names each service that did not answer, since when, and that its data is stale.

    Hidden while every service answers.
    """

    def __init__(self) -> None:
        super().__init__(id="banner")

    def show(self, snapshot: Snapshot, now: float) -> None:
        down = snapshot.down
        self.display = bool(down)
        if not down:
            return
        text = Text()
        for i, state in enumerate(down):
            if i:
                text.append("\n")
            since = duration(now - state.failing_since) if state.failing_since else "?"
            seen = snapshot.age(state.name)
            stale = (f"data from {duration(seen)} ago, stale" if seen is not None
                     else "no data yet")
            what = "unreachable" if state.unreachable else "failing"
            text.append(f"✖ {state.name} {what} for {since}", style="bold")
            text.append(f" ({stale}): {state.error or ''}")
        self.update(text)
