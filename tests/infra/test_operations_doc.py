"""docs/operations.md: every command in its `sh` blocks is real.

- `qctl ...` is parsed by qctl's own click tree (unknown commands or options fail), and the
  read-only ones run against a real stack and must exit 0;
- `qworker ...` is parsed by qworker's own argument parser;
- `promtool ...` and `docker-compose config ...` run in the repository and must exit 0;
- `pg_dump` / `pg_restore` run against a scratch PostgreSQL database, and `mysqldump` /
  `mysql` against a scratch MariaDB/MySQL one: a dump taken with the documented command
  restores every job into an empty database, whose counters go on above the restored ones;
- `docker compose ...` names a Compose subcommand and only services of compose.yaml;
- anything else must name a program on PATH.

The tools come from Debian (prometheus, docker-compose, postgresql-client, mariadb-client); without one, its
commands skip with the reason, except under CI (`CI` set), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
import pytest
import yaml
from backends import mysql_database, mysql_params
from raw_sql import raw_sql
from tooling import require_tool

from qctl.app import COMMANDS as QCTL_COMMANDS
from qctl.app import cli
from qshared.client import Client
from qshared.config import Settings
from qshared.storage import open_storage
from qshared.storage.base import NewJob
from qshared.storage.queries import load_queries
from qworker.__main__ import _parser as qworker_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
COMPOSE_SUBCOMMANDS = {"build", "up", "ps", "logs", "down", "pull", "restart", "stop", "config"}
# qctl commands that only read: they run against the stack.
READ_ONLY = {("health",), ("worker", "list"), ("worker", "show"), ("worker", "stats"),
             ("queue", "stats"), ("queue", "list-locks"), ("failover", "events"),
             ("job", "list"), ("job", "show"), ("db", "status"), ("db", "performance-stats"),
             ("worker", "validate-pool"), ("worker", "validate-config"),
             ("worker", "resource-stats")}
PLACEHOLDER = re.compile(r"<([a-z-]+)>")


def _commands() -> list[str]:
    """Every command line of the document's ```sh blocks (continuations joined)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


COMMANDS = _commands()


def _by_program(*programs: str) -> list[str]:
    return [c for c in COMMANDS if shlex.split(c)[0] in programs]


def _qctl_path(args: list[str]) -> tuple[tuple[str, ...], click.Context]:
    """Parse like qctl would; returns the command path and the innermost context."""
    from qctl.__main__ import rewrite_colon_commands

    def remaining(ctx: click.Context) -> list[str]:
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args (gone in 9)
            warnings.simplefilter("ignore", DeprecationWarning)
            return [*ctx.protected_args, *ctx.args]

    args = rewrite_colon_commands(args, list(QCTL_COMMANDS))
    ctx = cli.make_context("qctl", args)
    path: list[str] = []
    command: click.Command = cli
    rest = remaining(ctx)
    while isinstance(command, click.Group) and rest:
        name, found, rest = command.resolve_command(ctx, rest)
        assert found is not None, f"unknown command {name!r}"
        command = found
        path.append(command.name or "")
        ctx = command.make_context(command.name, rest, parent=ctx)
        rest = remaining(ctx) if isinstance(command, click.Group) else []
    return tuple(path), ctx


def test_the_document_has_commands():
    assert len(COMMANDS) >= 30, COMMANDS
    assert _by_program("qctl") and _by_program("promtool") and _by_program("pg_dump")
    assert _by_program("mysqldump") and _by_program("mysql")


@pytest.mark.parametrize("line", _by_program("qctl"))
def test_qctl_commands_parse(line: str):
    args = [PLACEHOLDER.sub("1", a) for a in shlex.split(line)[1:]]
    try:
        path, _ = _qctl_path(args)
    except click.UsageError as exc:
        pytest.fail(f"{line!r}: {exc.format_message()}")
    assert path, line


@pytest.mark.parametrize("line", _by_program("qworker"))
def test_qworker_commands_parse(line: str):
    args = shlex.split(line)[1:]
    try:
        qworker_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{line!r}: qworker's parser refused it ({exc.code})")


@pytest.mark.parametrize("line", _by_program("promtool"))
def test_promtool_commands_pass(line: str):
    require_tool("promtool", "prometheus")
    proc = subprocess.run(shlex.split(line), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"


def test_docker_compose_commands_are_real():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    services = set(compose)
    profiles = {p for service in compose.values() for p in service.get("profiles", ())}
    for line in _by_program("docker-compose"):
        require_tool("docker-compose")
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        proc = subprocess.run(shlex.split(line), cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=env)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
    compose_lines = [c for c in _by_program("docker") if shlex.split(c)[1] == "compose"]
    assert compose_lines
    for line in compose_lines:
        argv = shlex.split(line)[2:]
        while argv[0] == "--profile":  # global options before the subcommand
            assert argv[1] in profiles, f"{line}: no such compose profile {argv[1]!r}"
            argv = argv[2:]
        assert argv[0] in COMPOSE_SUBCOMMANDS, line
        named = [a for a in argv[1:] if not a.startswith("-")]
        named += [a.split("=")[0] for a in argv if "=" in a and not a.startswith("-")]
        for scaled in re.findall(r"--scale (\w+)=\d+", line):
            named.append(scaled)
        unknown = {n.split("=")[0] for n in named} - services
        assert not unknown, f"{line}: no such compose service {unknown}"


def test_other_commands_name_real_programs():
    checked = {"qctl", "qworker", "promtool", "docker-compose", "docker", "pg_dump", "pg_restore",
               "mysqldump", "mysql"}
    for line in COMMANDS:
        program = shlex.split(line)[0]
        if program not in checked:
            assert shutil.which(program), f"{line!r}: {program} is not on PATH"


# ---------------------------------------------------------------- against real services

@pytest.fixture(scope="module")
def stack(start_stack):
    stack = start_stack(workers=1, failover=True)
    with stack.client() as client:
        job_id = client.enqueue("echo", payload={"n": 1})
        client.wait(job_id, timeout=30)
    stack.doc_job_id = job_id
    return stack


def test_read_only_qctl_commands_run(stack, tmp_path):
    with Client(stack.registry_url, stack.token) as registry:
        workers = registry.request("GET", "/api/v1/workers")
    values = {"job-id": str(stack.doc_job_id), "worker-id": workers["workers"][0]["id"]}
    env = {**os.environ, "QSTACK_SCHEDULER_URL": stack.scheduler_url,
           "QSTACK_REGISTRY_URL": stack.registry_url,
           "QSTACK_FAILOVER_URL": stack.services["failover"].url,
           "QSTACK_TOKEN": stack.token, "DATABASE_URL": stack.database_url,
           "XDG_CONFIG_HOME": str(tmp_path)}
    ran = []
    for line in _by_program("qctl"):
        args = [PLACEHOLDER.sub(lambda m: values[m.group(1)], a) for a in shlex.split(line)[1:]]
        path, _ = _qctl_path(args)
        if path not in READ_ONLY:
            continue
        proc = subprocess.run([shutil.which("qctl") or "qctl", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        ran.append(line)
    assert len(ran) >= 8, ran


@pytest.fixture
def scratch_database(pg_dsn: str) -> Iterator[tuple[str, str]]:
    """(url of a new migrated database holding 3 jobs, url of a second, empty one)."""
    names = [f"qstack_doc_{secrets.token_hex(4)}" for _ in range(2)]
    urls = [urlunsplit(urlsplit(pg_dsn)._replace(path=f"/{name}")) for name in names]

    async def admin(statement: str) -> None:
        import asyncpg
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def fill(url: str) -> None:
        storage = await open_storage(url, pool_size=2)
        try:
            await storage.migrate()
            await storage.enqueue([NewJob("default", "noop", "{}") for _ in range(3)])
        finally:
            await storage.close()

    for name in names:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(fill(urls[0]))
        yield urls[0], urls[1]
    finally:
        for name in names:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_backup_and_restore_commands_work(scratch_database, tmp_path):
    require_tool("pg_dump", "postgresql-client")
    require_tool("pg_restore", "postgresql-client")
    source, target = scratch_database
    (dump_line,) = _by_program("pg_dump")
    (restore_line,) = _by_program("pg_restore")
    for line, url in ((dump_line, source), (restore_line, target)):
        proc = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "DATABASE_URL": url})
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"

    async def count() -> int:
        import asyncpg
        conn = await asyncpg.connect(target)
        try:
            return await conn.fetchval("SELECT count(*) FROM jobs")
        finally:
            await conn.close()

    assert asyncio.run(count()) == 3


async def test_mysqldump_and_mysql_restore_commands_work(mysql_dsn, tmp_path):
    require_tool("mysqldump", "mariadb-client")
    require_tool("mysql", "mariadb-client")
    (dump_line,) = _by_program("mysqldump")
    (restore_line,) = _by_program("mysql")
    async with (mysql_database(mysql_dsn, migrate=True) as source,
                mysql_database(mysql_dsn, migrate=False) as target):
        storage = await open_storage(source, pool_size=2)
        try:
            taken = [e.id for e in await storage.enqueue(
                [NewJob("default", "noop", "{}") for _ in range(3)])]
            async with raw_sql("mysql", source) as conn:
                await conn.execute(load_queries("mysql")["next_tokens"], {"n": 5})
                counters = await conn.fetch("SELECT * FROM qstack_sequences")
        finally:
            await storage.close()
        for line, url in ((dump_line, source), (restore_line, target)):
            p = mysql_params(url)
            env = {**os.environ, "DB_HOST": p["host"], "DB_PORT": str(p["port"]),
                   "DB_USER": p["user"], "DB_PASS": p["password"], "DB_NAME": p["db"]}
            proc = await asyncio.to_thread(
                subprocess.run, line, shell=True, cwd=tmp_path, capture_output=True,
                text=True, timeout=120, env=env)
            assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"

        storage = await open_storage(target, pool_size=2)
        try:
            assert all(m["applied_at"] for m in await storage.migration_status())
            restored = await storage.list_jobs(queue=None, status=None, task=None,
                                               before_id=None, limit=10)
            assert sorted(j["id"] for j in restored) == sorted(taken)
            (new,) = await storage.enqueue([NewJob("default", "noop", "{}")])
            assert new.id > max(taken)  # AUTO_INCREMENT came along
        finally:
            await storage.close()
        async with raw_sql("mysql", target) as conn:  # and the fencing-token counter
            assert counters and await conn.fetch("SELECT * FROM qstack_sequences") == counters
