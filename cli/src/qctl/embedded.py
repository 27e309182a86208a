"""The embedded PostgreSQL (the pgserver wheel) that qctl runs when no database is configured."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from qshared.errors import StorageError

DEFAULT_DATA_DIR = Path(".qstack") / "pg"
DEFAULT_DATABASE = "qstack"


def _pgserver() -> ModuleType:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI):
    # harmless, pgserver only keeps a lock file there.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver.postgres_server  # the class that keeps the registry

    return pgserver


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def running_dsn(data_dir: Path | str | None = None, database: str = DEFAULT_DATABASE) -> str | None:
    """The DSN of the embedded server in `data_dir` when it is running and ready, else None."""
    pgdata = Path(data_dir or DEFAULT_DATA_DIR).absolute()
    if not (pgdata / "postmaster.pid").exists():
        return None
    _pgserver()
    from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except Exception:  # a half-written pid file while the server starts or stops
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info.get_uri(database=database)


class EmbeddedPostgres:
    """A real PostgreSQL server in a local data directory, owned by this process until stop().

    As root, pgserver runs the server as the system user 'pgserver' (created if missing)
    and widens the read/traverse permissions of the data directory's parents. The server
    listens only on a unix socket; `dsn` is a URL asyncpg and the services accept
    (`postgresql://postgres:@/qstack?host=/path/to/socket/dir`).
    """

    def __init__(
        self, data_dir: Path | str | None = None, database: str = DEFAULT_DATABASE
    ) -> None:
        self.data_dir = Path(data_dir or DEFAULT_DATA_DIR).absolute()
        self.database = database
        self._server: Any = None
        self._lock_fd: int | None = None
        self._dsn: str | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """The URL of the application database; only after start()."""
        if self._dsn is None:
            raise StorageError("the embedded PostgreSQL is not started")
        return self._dsn

    @property
    def admin_dsn(self) -> str:
        """The URL of the 'postgres' maintenance database."""
        if self._server is None:
            raise StorageError("the embedded PostgreSQL is not started")
        return self._server.get_uri("postgres")

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while started."""
        return self._server.get_pid() if self._server is not None else None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / "log"

    @property
    def started(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> str:
        """Initialise the data directory if new, start the server, create the database.

        Returns: the DSN. Raises StorageError when it cannot start or another process
        owns this data directory.
        """
        if self._server is not None:
            return self.dsn
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            pgserver = _pgserver()
            try:
                self._server = pgserver.get_server(self.data_dir, cleanup_mode=None)
            except (subprocess.SubprocessError, OSError, AssertionError) as exc:
                raise StorageError(
                    f"embedded PostgreSQL in {self.data_dir} did not start: {exc}\n"
                    f"--- {self.log_path} ---\n{_tail(self.log_path)}"
                ) from None
            self._create_database(timeout)
            self._dsn = self._server.get_uri(self.database)
        except BaseException:
            self.stop()
            raise
        return self._dsn

    def _lock(self) -> None:
        path = self.data_dir.parent / f".{self.data_dir.name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StorageError(
                f"the embedded PostgreSQL in {self.data_dir} is in use by another qctl "
                f"(pid {owner}); stop it first or pass --db"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _create_database(self, timeout: float) -> None:
        import asyncpg

        from qctl.database import run_sync

        admin, name = self.admin_dsn, self.database

        async def create() -> None:
            conn = await asyncpg.connect(admin, timeout=timeout)
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
                if not exists:
                    quoted = '"' + name.replace('"', '""') + '"'
                    await conn.execute(f"CREATE DATABASE {quoted}")
            finally:
                await conn.close()

        try:
            run_sync(create)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"embedded PostgreSQL: cannot create database {name!r}: {exc}") \
                from None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown, then SIGKILL if it lingers) and release the dir."""
        server, self._server, self._dsn = self._server, None, None
        try:
            if server is not None:
                self._shutdown(server, timeout)
        finally:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                self._lock_fd = None

    def _shutdown(self, server: Any, timeout: float) -> None:
        from pgserver._commands import pg_ctl
        from pgserver.postgres_server import PostgresServer

        pid = server.get_pid()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            pg_ctl(["-w", "-t", str(int(timeout)), "-m", "fast", "stop"],
                   pgdata=self.data_dir, user=server.system_user, timeout=timeout + 5)
        if pid and not _wait_gone(pid, 5.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        # pgserver keeps a per-process registry and an atexit hook; forget this server so
        # a later start() in this process starts a fresh one instead of reusing a dead one.
        PostgresServer._instances.pop(self.data_dir.resolve(), None)
        atexit.unregister(server._cleanup)
        with contextlib.suppress(Exception), server._lock:
            server.global_process_id_list.get_and_remove(os.getpid())

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until the process is gone; True if it is."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
