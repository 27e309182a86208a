"""`qctl demo` driven in tmux as a new user would: how long until the overview shows live
figures, then a capture of every screen (keys 1 to 6), then `q`, which must stop everything.

    uv run python bench/demo_in_tmux.py [--size 120x36] [--out bench/results/demo-screens.txt]

Needs tmux (Debian's `tmux`). Uses its own state directory, config directory and ports.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = "qstack-demo-bench"
LIVE = re.compile(r"processed\s+(\d+\.\d)/s")  # the overview's live throughput figure


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def capture() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="120x36")
    p.add_argument("--port-base", type=int, default=28100)
    p.add_argument("--out", default="bench/results/demo-screens.txt")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux not found (apt-get install tmux)")
    width, height = args.size.split("x")
    home = Path(tempfile.mkdtemp(prefix="qstack-demo-"))
    command = (f"cd {Path.cwd()} && QSTACK_CONFIG_DIR={home}/config {sys.executable} -m qctl "
               f"demo --state-dir {home}/state --port-base {args.port_base}")
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    started = time.monotonic()
    tmux("new-session", "-d", "-s", SESSION, "-x", width, "-y", height, command)
    painted = live = None
    try:
        while time.monotonic() - started < 180:
            screen = capture()
            if painted is None and "Overview" in screen:
                painted = time.monotonic()
            m = LIVE.search(screen)
            if painted is not None and m and float(m.group(1)) > 0:
                live = time.monotonic()
                break
            time.sleep(0.1)
        if live is None:
            raise SystemExit(f"no live figures within 180 s; the screen:\n{capture()}")
        screens = []
        for key in "123456":
            tmux("send-keys", "-t", SESSION, key)
            time.sleep(2)
            screens.append(f"--- key {key}\n{capture()}")
        tmux("send-keys", "-t", SESSION, "q")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if subprocess.run(["tmux", "has-session", "-t", SESSION],
                              capture_output=True).returncode != 0:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("qtui quit, but the demo did not stop within 60 s")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(screens) + "\n")
    print(f"stack up and qtui painted after {painted - started:.1f} s; live figures "
          f"{live - painted:.1f} s after the first paint; screens in {args.out}; "
          "q stopped everything")


if __name__ == "__main__":
    main()
