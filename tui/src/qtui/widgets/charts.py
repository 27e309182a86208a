"""Live charts: a labelled Sparkline of a per-second series."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline


def rate(series: Sequence[float], window: int = 10) -> float:
    """The mean of the last `window` full seconds (the newest bucket is still filling)."""
    full = list(series[:-1]) if len(series) > 1 else list(series)
    tail = full[-window:]
    return sum(tail) / len(tail) if tail else 0.0


class RateChart(Horizontal):
    """`processed  12.3/s ▁▂▅▇█▇▅` — the current rate and the last minute, second by second."""

    def __init__(self, name: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="rate-chart")
        self.series_name = name

    def compose(self) -> ComposeResult:
        yield Label(f"{self.series_name:<9}  -", classes="rate-label")
        yield Sparkline([], classes="rate-spark")

    def show(self, series: Sequence[float]) -> None:
        self.query_one(Label).update(f"{self.series_name:<9}{rate(series):>6.1f}/s")
        self.query_one(Sparkline).data = list(series)
