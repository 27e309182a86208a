"""Child processes of a local stack: how to run a service, spawn it, and stop it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def command_for(name: str) -> list[str]:
    """How to run a qstack console script with this interpreter.

    The script installed next to `sys.executable` (the venv's bin/) if present, else
    `python -m name`; never a same-named script of some other environment on PATH.
    """
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", name]


def port_in_use(host: str, port: int) -> bool:
    """True when something is bound to host:port (a socket in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, offset: int = 0, lines: int = 15) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


@dataclass
class Service:
    """One child process of the stack, where it answers and where it logs."""

    name: str
    kind: str
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    reported: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); the exit code once it ended."""
        return self.proc.poll() if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines this run of the process wrote."""
        return _tail(self.log_path, self.log_offset, lines)

    def spawn(self, env: dict[str, str], *, truncate: bool = False) -> None:
        """Start the process with `env`, its output going to its log file."""
        self.close_log()
        self.env = env
        self._log = self.log_path.open("wb" if truncate else "ab")
        self.log_offset = self._log.tell()
        self.reported = False
        # PR_SET_PDEATHSIG fires when the forking *thread* ends, so only from the main thread
        in_main = threading.current_thread() is threading.main_thread()
        libc = _load_libc() if in_main else None
        self.proc = subprocess.Popen(
            self.argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
            # own process group: a Ctrl-C in the terminal reaches qctl only, which then
            # stops the children in order
            process_group=0,
            preexec_fn=_die_with_parent if libc is not None else None,
        )

    def signal(self, sig: int) -> None:
        """Send a signal to the process if it runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)  # type: ignore[union-attr]

    def kill_group(self) -> None:
        """SIGKILL the process and anything it started (its process group), then reap it."""
        if self.proc is None:
            return
        if self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def terminate(
    services: Sequence[Service], grace: float, *, force: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda _msg: None,
) -> None:
    """SIGTERM the running services, wait up to `grace` (or until `force()`), then SIGKILL."""
    live = [s for s in services if s.running]
    for service in live:
        log(f"stopping {service.name}")
        service.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(s.running for s in live) and time.monotonic() < deadline and not force():
        time.sleep(0.05)
    forced = force()
    for service in live:
        if service.running:
            log(f"{service.name} killed" if forced
                else f"{service.name} did not stop within {grace:.0f}s: killed")
        service.kill_group()
        service.reported = True


_libc: Any = None


def _load_libc() -> Any:
    """libc, loaded in the parent: dlopen after fork in a threaded process can deadlock."""
    global _libc
    if _libc is None and sys.platform == "linux":
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when qctl dies, even by SIGKILL (Linux)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
