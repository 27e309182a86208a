"""qtui's speed: first paint of a new process, and the UI time of a refresh of a big system.

Targets (issue 5): first paint under 1 s; one refresh against 1,000 workers and 100,000 jobs
under 100 ms of UI time, on every screen. Uses the fixed-data client of the qtui tests.

    uv run python bench/tui_speed.py
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tui"))

from fixtures import WORKERS, FixedClient, make_app, refresh, settle

from qtui.widgets.tables import LiveTable

FIRST_PAINT = """
import asyncio, sys
sys.path.insert(0, {here!r})
from qtui.app import QtuiApp
from fixtures import FixedClient, clock

app = QtuiApp(FixedClient(), clock=clock, live=False)
app.call_later(lambda: app.call_after_refresh(app.exit))  # once running: exit after a paint
asyncio.run(app.run_async(headless=True, size=(80, 24)))
"""


def first_paint() -> list[float]:
    """A new interpreter, imports included, until the first screen has been painted."""
    here = str(Path(__file__).resolve().parents[1] / "tests" / "tui")
    code = FIRST_PAINT.format(here=here)
    timings = []
    for _ in range(3):  # the best of three: a busy machine only ever makes it slower
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        timings.append(time.perf_counter() - started)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    return timings


def _many_workers(n: int, bump: int = 0) -> list[dict]:
    """n workers; `bump` changes a third of them (their load and heartbeat age)."""
    base = WORKERS[0]
    return [{**base, "id": f"worker-{i:04d}", "hostname": f"node-{i % 50}",
             "in_flight": (i + bump * (i % 3 == 0)) % 9, "cpu_percent": float(i % 100),
             "heartbeat_age_s": (i % 20) / 10 + bump * (i % 3 == 0)} for i in range(n)]


async def refresh_ui_time() -> dict[str, list[float]]:
    """Per screen key, the UI seconds of three refreshes of 1,000 workers and 100,000 jobs."""
    result = {}
    jobs = [{**FixedClient().data_jobs[0], "id": 200_000 - i} for i in range(200)]
    queues = [{**q, "pending": 25_000} for q in FixedClient().data_queues]  # 100,000 pending
    client = FixedClient(workers=_many_workers(1000), jobs=jobs, queues=queues)
    app = make_app(client)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        for key in "1234":
            await pilot.press(key)
            await settle(pilot)
            timings = []
            for bump in range(3):
                client.data_workers = _many_workers(1000, bump + 1)
                await refresh(pilot)
                # The UI's share of one refresh: handing the snapshot to the screen (done in
                # the refresh, timed by the app) and the repaint it causes, forced here.
                for table in app.screen.query(LiveTable):
                    table._strips.clear()  # repaint every visible row (the worst case)
                started = time.perf_counter()
                app.screen._compositor.render_update(full=True)
                timings.append(app.ui_seconds + time.perf_counter() - started)
            result[key] = timings
    return result


def main() -> None:
    paints = first_paint()
    print(f"first paint (new process, best of 3): {min(paints) * 1000:.0f} ms  "
          f"(all: {', '.join(f'{t * 1000:.0f}' for t in paints)}; target < 1000 ms)")
    screens = {"1": "overview", "2": "workers", "3": "queues", "4": "jobs"}
    for key, timings in asyncio.run(refresh_ui_time()).items():
        print(f"refresh UI time, {screens[key]:<8} (1,000 workers, 100,000 jobs): best "
              f"{min(timings) * 1000:.1f} ms, worst {max(timings) * 1000:.1f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
