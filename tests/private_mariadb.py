"""A private MariaDB server for one test: its own data directory, port and socket.

A chaos test that stops and starts the database must never touch the machine's shared
server; this one lives in a temporary directory and dies with the test. It needs Debian's
mariadb-server binaries: `mariadb-install-db` and `mariadbd` (looked up on PATH, then in
/usr/sbin and /usr/bin).

Durability is traded for speed (no fsync, no doublewrite, no binary log): a clean shutdown
still writes everything committed, which is all a restart test asks of it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from e2e_helpers import free_port_base

BINARIES = ("mariadb-install-db", "mariadbd")
# Server options shared by the bootstrap (mariadb-install-db passes them on) and the server.
FAST = ("--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
        "--innodb-flush-method=nosync", "--innodb-doublewrite=0",
        "--innodb-flush-log-at-trx-commit=2")


def binary(name: str) -> str | None:
    """The path of a MariaDB binary, or None when it is not installed."""
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).is_file()), None)


def missing_binaries() -> list[str]:
    """The binaries a PrivateMariaDB needs that this machine lacks."""
    return [name for name in BINARIES if binary(name) is None]


class PrivateMariaDB:
    """mariadbd on 127.0.0.1:`port` over a data directory in `root`, as root, without password.

    start() initialises the data directory the first time, starts the server and waits until
    it answers; stop() shuts it down cleanly (SIGTERM, then SIGKILL if it lingers); start()
    again brings it back on the same port and data. `url` names the database `database`,
    created on the first start.
    """

    def __init__(self, root: Path, database: str = "qstack", port: int | None = None) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.socket = self.root / "mariadb.sock"
        self.log_path = self.root / "mariadbd.log"
        self.database = database
        self.port = port or free_port_base(span=2) + 1
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{self.database}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _tail(self, path: Path, lines: int = 20) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _install(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / "install.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [binary("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
                 f"--datadir={self.data_dir}", "--user=root",
                 "--auth-root-authentication-method=normal", "--skip-test-db",
                 "--skip-name-resolve", *FAST],
                stdout=out, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db exited {done.returncode}:\n{self._tail(log)}")

    def start(self, timeout: float = 60.0) -> str:
        """Start the server (initialising it first when new); the database's URL once it
        answers."""
        if self.running:
            return self.url
        first = not (self.data_dir / "mysql").is_dir()
        if first:
            self._install()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [binary("mariadbd") or "mariadbd", "--no-defaults", f"--datadir={self.data_dir}",
                 f"--port={self.port}", f"--socket={self.socket}", "--bind-address=127.0.0.1",
                 "--user=root", f"--pid-file={self.root / 'mariadbd.pid'}",
                 "--skip-name-resolve", "--max-connections=300", *FAST],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)  # its own session: a dying test run would leave it behind
        try:
            self._wait_ready(timeout)
            if first:
                self._execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        except BaseException:
            self.stop()
            raise
        return self.url

    def _execute(self, sql: str | None) -> None:
        import aiomysql

        async def go() -> None:
            conn = await aiomysql.connect(host="127.0.0.1", port=self.port, user="root",
                                          password="", connect_timeout=2, autocommit=True)
            try:
                if sql:
                    async with conn.cursor() as cur:
                        await cur.execute(sql)
            finally:
                conn.close()

        asyncio.run(go())

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"mariadbd exited {code} while starting; "
                                   f"{self.log_path}:\n{self._tail(self.log_path)}")
            try:
                self._execute(None)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not answer within {timeout:.0f}s; "
                                       f"{self.log_path}:\n{self._tail(self.log_path)}") \
                        from None
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown (SIGTERM); SIGKILL when it takes longer than `timeout`."""
        proc, self.proc = self.proc, None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def remove(self) -> None:
        """Stop the server and delete its data directory (its logs stay in `root`)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PrivateMariaDB:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
