"""Every qtui screen pinned as an SVG at 80x24 and 160x48, on fixed data at a fixed time.

Regenerate after an intended change with `uv run pytest tests/tui/test_snapshots.py
--snapshot-update`, and look at the report pytest-textual-snapshot writes when one differs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from fixtures import Clock, FixedClient, make_app, refresh, settle

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}

# screen -> the keys that lead there after the first refresh
SCREENS: dict[str, tuple[str, ...]] = {
    "overview": (),
    "workers": ("2",),
    "worker_detail": ("2", "down", "enter"),
    "queues": ("3",),
    "jobs": ("4",),
    "job_detail_dead": ("4", "slash", *"status:dead", "enter", "enter"),
    "locks": ("5",),
    "failover": ("6",),
    "workers_filtered": ("2", "slash", *"node-b", "enter"),
    "confirm_drain": ("2", "d"),
    "confirm_bulk_retry": ("4", "slash", *"queue:emails status:dead", "enter", "R"),
    "help": ("2", "question_mark"),
}


def keys_then_settle(keys: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(snap_compare, screen: str, size: str) -> None:
    assert snap_compare(make_app(), run_before=keys_then_settle(SCREENS[screen]),
                        terminal_size=SIZES[size])


def outage(screen_keys: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    """The registry stops answering 12 s after the first refresh; 8 s later, another."""

    async def run_before(pilot) -> None:
        app = pilot.app
        await settle(pilot)
        for key in screen_keys:
            await pilot.press(key)
            await settle(pilot)
        app.client.down.add("registry")
        app.clock.advance(12)
        await refresh(pilot)
        app.clock.advance(8)
        await refresh(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", {"overview": (), "workers": ("2",)})
def test_registry_down(snap_compare, screen: str, size: str) -> None:
    keys = () if screen == "overview" else ("2",)
    app = make_app(FixedClient(), clock=Clock())
    assert snap_compare(app, run_before=outage(keys), terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_without_prometheus(snap_compare, size: str) -> None:
    app = make_app(FixedClient(prometheus=False))
    assert snap_compare(app, run_before=keys_then_settle(()), terminal_size=SIZES[size])
