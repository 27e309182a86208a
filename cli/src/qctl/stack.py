"""A whole local qstack as child processes: database, registry, scheduler and workers."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from qctl.embedded import EmbeddedPostgres, process_alive
from qctl.processes import Service, command_for, port_in_use, terminate
from qshared.client import Client
from qshared.errors import QstackError


class StackError(QstackError):
    """The local stack could not be started."""

    code = "stack_failed"


class Stack:
    """A local qstack started and stopped as one: what `qctl up`, `qctl demo` and e2e tests run.

    Ports: registry `port_base + 1`, scheduler `+ 2`, failover `+ 3` (when enabled),
    further scheduler replicas `+ 4` to `+ 8`,
    worker i `+ 10 + i`. Without `database_url` an embedded PostgreSQL is started in
    `state_dir/pg`; logs go to `state_dir/logs/<name>.log`.
    """

    def __init__(
        self, *, workers: int = 3, database_url: str | None = None, port_base: int = 8080,
        concurrency: int = 4, queues: Sequence[str] = ("default", "emails", "reports"),
        token: str | None = None, host: str = "127.0.0.1", state_dir: Path | str = ".qstack",
        log_level: str = "info", app: str | None = None, env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0, failover: bool = False, migrate: bool = True,
        schedulers: int = 1,
        on_exit: Callable[[Service, int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.workers, self.concurrency, self.queues = workers, concurrency, list(queues)
        self.host, self.port_base, self.app = host, port_base, app
        self.state_dir = Path(state_dir).absolute()
        self.log_dir = self.state_dir / "logs"
        self.log_level, self.extra_env = log_level, dict(env or {})
        self.startup_timeout, self.failover, self.migrate = startup_timeout, failover, migrate
        if not 1 <= schedulers <= 6:
            raise ValueError("schedulers must be between 1 and 6")
        self.schedulers = schedulers
        self.token = token or secrets.token_urlsafe(24)
        self.token_generated = token is None
        self.embedded: EmbeddedPostgres | None = None
        self._database_url = database_url
        self._log = log or (lambda _msg: None)
        self._on_exit = on_exit or (lambda s, rc: self._log(f"{s.name} exited with code {rc}"))
        self._stop_requested = False
        self._force = False
        self._stopped = True
        self._db_reported = False
        self.services: dict[str, Service] = {}
        self._plan()

    # -- addresses -----------------------------------------------------------------------
    @property
    def registry_url(self) -> str:
        return self.services["registry"].url

    @property
    def scheduler_url(self) -> str:
        return self.services["scheduler"].url

    @property
    def worker_urls(self) -> list[str]:
        return [s.url for s in self.services.values() if s.kind == "worker"]

    @property
    def database_url(self) -> str:
        """The database in use (the embedded one's DSN once started)."""
        if self._database_url is None:
            raise StackError("the stack's database is not started")
        return self._database_url

    def client(self, timeout: float = 30.0) -> Client:
        """A qshared client of this stack's scheduler, with its token."""
        return Client(self.scheduler_url, self.token, timeout=timeout)

    def summary(self) -> dict[str, Any]:
        """What is running where, for printing."""
        return {
            "database_url": self._database_url,
            "embedded_database": self.embedded is not None,
            "registry_url": self.registry_url, "scheduler_url": self.scheduler_url,
            "worker_urls": self.worker_urls, "token": self.token,
            "queues": self.queues, "concurrency": self.concurrency,
            "log_dir": str(self.log_dir),
        }

    # -- plan ----------------------------------------------------------------------------
    def _plan(self) -> None:
        plan = [("registry", "registry", 1), ("scheduler", "scheduler", 2)]
        if self.failover:
            plan.append(("failover", "failover", 3))
        plan += [(f"scheduler-{i}", "scheduler", 2 + i) for i in range(2, self.schedulers + 1)]
        plan += [(f"worker-{i + 1}", "worker", 10 + i) for i in range(self.workers)]
        for name, kind, offset in plan:
            port = self.port_base + offset
            argv = command_for(f"q{kind}")
            if kind == "worker":
                argv += ["start", "--queues", ",".join(self.queues),
                         "--concurrency", str(self.concurrency), "--port", str(port)]
                if self.app:
                    argv += ["--app", self.app]
            self.services[name] = Service(
                name, kind, argv, {}, self.host, port, self.log_dir / f"{name}.log"
            )

    def _env(self, service: Service) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url, "QSTACK_TOKEN": self.token,
            "QSTACK_HOST": self.host, "QSTACK_PORT": str(service.port),
            "QSTACK_REGISTRY_URL": self.registry_url, "QSTACK_SCHEDULER_URL": self.scheduler_url,
            "QSTACK_ADVERTISE_URL": service.url, "LOG_LEVEL": self.log_level,
            "WORKER_QUEUES": ",".join(self.queues), "WORKER_CONCURRENCY": str(self.concurrency),
            "PYTHONUNBUFFERED": "1",
        })
        if service.kind == "worker" and self.app:
            # console scripts do not put the working directory on sys.path; --app may live there
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        return env

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the database (if embedded), migrate, then every service; wait until healthy.

        Raises StackError naming the service (with the tail of its log) when one does not
        come up; everything already started is stopped again first.
        """
        if not self._stopped:
            return
        self._stopped = self._stop_requested = self._force = False
        self._db_reported = False
        atexit.register(self.stop)
        try:
            busy = [f"{s.port} ({s.name})" for s in self.services.values()
                    if port_in_use(self.host, s.port)]
            if busy:
                raise StackError(f"ports already in use on {self.host}: {', '.join(busy)}")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if self._database_url is None:
                self._log(f"starting embedded PostgreSQL in {self.state_dir / 'pg'}")
                self.embedded = EmbeddedPostgres(self.state_dir / "pg")
                self._database_url = self.embedded.start()
            if self.migrate:
                from qctl.database import migrate

                applied = migrate(self.database_url)
                self._log(f"migrations applied: {', '.join(applied)}" if applied
                          else "database schema is up to date")
            front = [s for s in self.services.values() if s.kind != "worker"]
            workers = [s for s in self.services.values() if s.kind == "worker"]
            for group in (front, workers):
                for service in group:
                    self._spawn(service, truncate=True)
                self._wait_healthy(group)
        except BaseException:
            self.stop(grace=5.0)
            raise

    def _spawn(self, service: Service, truncate: bool = False) -> None:
        self._log(f"starting {service.name} on {service.url}")
        service.spawn(self._env(service), truncate=truncate)

    def _wait_healthy(self, services: Sequence[Service]) -> None:
        pending = list(services)
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as http:
            while pending:
                for service in list(pending):
                    rc = service.returncode
                    if rc is not None:
                        service.reported = True
                        raise StackError(
                            f"{service.name} exited with code {rc} while starting; "
                            f"last lines of {service.log_path}:\n{service.log_tail()}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if http.get(f"{service.url}/health").status_code == 200:
                            pending.remove(service)
                            self._log(f"{service.name} is healthy")
                if not pending:
                    return
                if self._stop_requested:
                    raise StackError("start interrupted")
                if time.monotonic() > deadline:
                    names = ", ".join(s.name for s in pending)
                    first = pending[0]
                    raise StackError(
                        f"{names} did not answer {first.url}/health with 200 within "
                        f"{self.startup_timeout:.0f}s; last lines of {first.log_path}:\n"
                        f"{first.log_tail()}"
                    )
                time.sleep(0.1)

    @property
    def stop_requested(self) -> bool:
        """True once request_stop() was called (by a signal handler, say)."""
        return self._stop_requested

    def request_stop(self) -> None:
        """Make wait() return (safe to call from a signal handler); a second call forces."""
        if self._stop_requested:
            self._force = True
        self._stop_requested = True

    def poll(self) -> list[Service]:
        """Children that ended since the last poll (each reported once to on_exit)."""
        ended = []
        for service in self.services.values():
            rc = service.returncode
            if rc is not None and not service.reported:
                service.reported = True
                ended.append(service)
                self._on_exit(service, rc)
        if self.embedded is not None and self.embedded.started and not self._db_reported:
            pid = self.embedded.pid
            if pid is not None and not process_alive(pid):
                self._db_reported = True
                self._log(f"embedded PostgreSQL (pid {pid}) is gone; see {self.embedded.log_path}")
        return ended

    def wait(self, timeout: float | None = None) -> None:
        """Block until request_stop(), `timeout`, or every child has ended; report deaths."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop_requested:
            self.poll()
            if not any(s.running for s in self.services.values()):
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.2)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the workers, then the services; SIGKILL what outlives `grace`; stop the db."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            workers = [s for s in self.services.values() if s.kind == "worker"]
            front = [s for s in self.services.values() if s.kind != "worker"]
            for group in (workers, front):
                terminate(group, grace, force=lambda: self._force, log=self._log)
        finally:
            for service in self.services.values():
                service.close_log()
            if self.embedded is not None:
                self._log("stopping embedded PostgreSQL")
                self.embedded.stop()
                self._database_url = None
                self.embedded = None

    # -- chaos helpers -------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one child (SIGKILL by default).

        A SIGKILL sent here is waited for and counts as expected: on_exit is not called.
        """
        service = self.services[name]
        service.signal(sig)
        if sig == signal.SIGKILL and service.proc is not None:
            service.proc.wait()
            service.reported = True

    def restart(self, name: str) -> None:
        """Start one child again (after it died or was killed) and wait until it is healthy."""
        service = self.services[name]
        if service.running:
            raise StackError(f"{name} is still running")
        self._spawn(service)
        self._wait_healthy([service])

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
