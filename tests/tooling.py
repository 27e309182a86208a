"""What the infra and end-to-end tests share about outside tools and files.

A missing system tool (promtool, prometheus, nginx, docker-compose, pg_dump: Debian packages
that `.ci/run` installs) skips the test with the reason, except under CI (`CI` set), where it
fails: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest


def skip_or_fail(reason: str) -> None:
    """Skip, or fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(reason + " -- required under CI")
    pytest.skip(reason)


def require_tool(name: str, package: str | None = None, also: tuple[str, ...] = ()) -> str:
    """The path of program `name` (on PATH or one of `also`); skips or fails without it."""
    path = shutil.which(name) or next((p for p in also if os.access(p, os.X_OK)), None)
    if path is None:
        package = package or name
        skip_or_fail(f"{name} not found: install Debian's `{package}` package "
                     f"(apt-get install -y {package})")
    assert path is not None
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as compose's env_file reads them."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
