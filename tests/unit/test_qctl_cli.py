"""qctl without services: colon spellings, contexts, exit codes, usage errors, embedded db."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import click
import pytest
from click.testing import CliRunner, Result

from qctl.__main__ import main, rewrite_colon_commands
from qctl.app import COMMANDS, cli
from qctl.contexts import Context, ContextStore, resolve
from qctl.embedded import EmbeddedPostgres, process_alive, running_dsn
from qctl.errors import exit_code_for
from qshared.errors import (
    Forbidden,
    NotFound,
    QstackError,
    ServiceUnavailable,
    StorageError,
    Unauthorized,
    ValidationFailed,
)

UNREACHABLE_URL = "http://127.0.0.1:1"
_ENDPOINT_VARS = ("QSTACK_SCHEDULER_URL", "QSTACK_REGISTRY_URL", "QSTACK_FAILOVER_URL",
                  "QSTACK_TOKEN", "DATABASE_URL", "DB_HOST")


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty qctl config dir, and no endpoint variables leaking in from the shell."""
    folder = tmp_path / "config"
    monkeypatch.setenv("QSTACK_CONFIG_DIR", str(folder))
    for name in _ENDPOINT_VARS:
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def run(config_dir: Path) -> Iterator:
    """run(*args) -> click Result of `qctl args...`, stdout and stderr kept apart."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    yield invoke


# -- colon spellings -------------------------------------------------------------------
GROUPS = ["worker", "db", "queue", "job", "context", "enqueue", "up", "failover"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["worker:list"], ["worker", "list"]),
        (["db:migrate", "--db", "postgresql://u@h:5432/d"],
         ["db", "migrate", "--db", "postgresql://u@h:5432/d"]),
        (["--scheduler-url", "http://127.0.0.1:8082", "queue:stats"],
         ["--scheduler-url", "http://127.0.0.1:8082", "queue", "stats"]),
        (["worker", "list"], ["worker", "list"]),
        (["enqueue", "emails:send"], ["enqueue", "emails:send"]),
        (["worker:stop", "--worker-id=w:1"], ["worker", "stop", "--worker-id=w:1"]),
        (["worker:failover-recovery", "--force"], ["worker", "failover-recovery", "--force"]),
        (["--failover-url", "http://h:8083", "failover:events"],
         ["--failover-url", "http://h:8083", "failover", "events"]),
        (["queue:clear-stale-locks"], ["queue", "clear-stale-locks"]),
        (["nope:list"], ["nope:list"]),
        ([], []),
    ],
)
def test_colon_spellings_become_two_words(argv: list[str], expected: list[str]) -> None:
    assert rewrite_colon_commands(argv, GROUPS) == expected


def test_every_command_loads_under_its_name() -> None:
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name


def test_a_command_against_the_services_starts_without_the_database_layer() -> None:
    """Commands load when asked for (COMMANDS): `qctl worker list` and the like don't import
    the drivers, the settings or the local stack, half of qctl's start-up."""
    code = ("import sys\n"
            "import click\nfrom qctl.app import cli\n"
            "ctx = click.Context(cli)\n"
            "for name in ('worker', 'queue', 'job', 'failover', 'health', 'enqueue'):\n"
            "    assert cli.get_command(ctx, name) is not None\n"
            "heavy = ('asyncpg', 'aiomysql', 'pydantic_settings', 'qctl.database', 'qctl.stack')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-c", code.replace("'enqueue'", "'db'")],
                          capture_output=True, text=True, check=True)
    assert "qctl.database" in done.stdout  # the probe sees what a database command loads


def test_main_accepts_colon_spelling_and_exits_3_when_unreachable(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker:list", "--registry-url", UNREACHABLE_URL])
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach http://127.0.0.1:1")
    assert "Traceback" not in err


# -- contexts ---------------------------------------------------------------------------
def test_context_add_use_list_remove(run, config_dir: Path) -> None:
    result = run("context", "list")
    assert result.exit_code == 0 and "no contexts yet" in result.output

    result = run("context", "add", "prod", "--scheduler-url", "https://s.example/",
                 "--registry-url", "https://r.example", "--token", "tok-prod-123")
    assert result.exit_code == 0, result.output
    assert run("context", "add", "gw", "--gateway-url", "http://gw.example").exit_code == 0

    listed = json.loads(run("context", "list", "-o", "json").stdout)
    assert listed["current"] == "prod"  # the first context becomes current
    by_name = {c["name"]: c for c in listed["contexts"]}
    assert by_name["prod"]["scheduler_url"] == "https://s.example"  # trailing / dropped
    assert by_name["prod"]["token"] != "tok-prod-123"  # masked unless --show-token
    assert by_name["gw"]["registry_url"] == "http://gw.example"

    assert run("context", "use", "gw").exit_code == 0
    assert run("context", "current").stdout.strip() == "gw"
    stored = json.loads((config_dir / "contexts.json").read_text())
    assert stored["current"] == "gw"
    assert (config_dir / "contexts.json").stat().st_mode & 0o077 == 0  # holds tokens

    missing = run("context", "use", "staging")
    assert missing.exit_code == 5
    assert missing.stderr.startswith("error: no context named 'staging'")

    assert run("context", "remove", "gw").exit_code == 0
    assert run("context", "current").exit_code == 1
    assert [c.name for c in ContextStore().contexts.values()] == ["prod"]


def test_output_option_works_on_the_root_group_and_the_command(run) -> None:
    assert run("context", "add", "a", "--gateway-url", "http://a.example").exit_code == 0
    assert json.loads(run("-o", "json", "context", "list").stdout)["current"] == "a"
    assert run("-o", "json", "context", "list", "-o", "table").stdout.startswith("   NAME")


def test_context_add_needs_a_url(run) -> None:
    result = run("context", "add", "empty")
    assert result.exit_code == 2
    assert "--scheduler-url" in result.output


def test_resolution_order_option_env_context_default(config_dir: Path) -> None:
    store = ContextStore(config_dir / "contexts.json")
    store.put(Context("local", "http://ctx:2", "http://ctx:1", "ctx-token"), make_current=True)
    store.put(Context("other", "http://other:2", None, None, gateway_url="http://gw:80"))

    assert resolve(env={}, store=store).scheduler_url == "http://ctx:2"
    env = {"QSTACK_SCHEDULER_URL": "http://env:2", "QSTACK_TOKEN": "env-token"}
    t = resolve(env=env, store=store)
    assert (t.scheduler_url, t.registry_url, t.token) == ("http://env:2", "http://ctx:1",
                                                           "env-token")
    t = resolve(scheduler_url="http://opt:2/", token="opt-token", env=env, store=store)
    assert (t.scheduler_url, t.token) == ("http://opt:2", "opt-token")
    # a context named on the command line beats the environment; the gateway fills gaps
    t = resolve(context="other", env=env, store=store)
    assert (t.scheduler_url, t.registry_url, t.token) == ("http://other:2", "http://gw:80",
                                                           "env-token")
    store.remove("local")
    store.remove("other")
    t = resolve(env={}, store=store)
    assert (t.scheduler_url, t.registry_url, t.token) == (
        "http://127.0.0.1:8082", "http://127.0.0.1:8081", None)


def test_failover_url_resolution_and_old_contexts_files(config_dir: Path) -> None:
    path = config_dir / "contexts.json"
    config_dir.mkdir(parents=True)
    # written by a qctl that knew no failover_url: still loads, the field takes the default
    path.write_text(json.dumps({"current": "old", "contexts": [
        {"name": "old", "scheduler_url": "http://s:2", "registry_url": "http://r:1",
         "token": "t", "gateway_url": None}]}))
    store = ContextStore(path)
    assert store.get("old").failover_url is None
    assert resolve(env={}, store=store).failover_url == "http://127.0.0.1:8083"

    store.put(Context("new", "http://s:2", failover_url="http://f:3/"), make_current=True)
    store.put(Context("gw", gateway_url="http://gw:80"))
    assert json.loads(path.read_text())["contexts"][1]["failover_url"] == "http://f:3/"
    t = resolve(env={}, store=store)
    assert (t.failover_url, t.sources["failover_url"]) == ("http://f:3", "context new")
    env = {"QSTACK_FAILOVER_URL": "http://env:3"}
    assert resolve(env=env, store=store).failover_url == "http://env:3"
    assert resolve(failover_url="http://opt:3", env=env, store=store).failover_url == \
        "http://opt:3"
    assert resolve(context="gw", env={}, store=store).failover_url == "http://gw:80"


def test_current_context_is_used_by_remote_commands(run) -> None:
    assert run("context", "add", "dead", "--gateway-url", UNREACHABLE_URL).exit_code == 0
    result = run("queue", "stats")
    assert result.exit_code == 3
    assert UNREACHABLE_URL in result.stderr


# -- exit codes and errors -------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "noop", "--scheduler-url", UNREACHABLE_URL),
        ("--scheduler-url", UNREACHABLE_URL, "job", "show", "7"),
        ("job", "list", "--scheduler-url", UNREACHABLE_URL, "-o", "json"),
        ("worker", "stats", "--registry-url", UNREACHABLE_URL),
        ("worker", "failover-recovery", "--force", "--failover-url", UNREACHABLE_URL),
        ("--failover-url", UNREACHABLE_URL, "worker", "cleanup-crashed", "-o", "json"),
        ("failover", "events", "--failover-url", UNREACHABLE_URL),
        ("queue", "list-locks", "--scheduler-url", UNREACHABLE_URL),
        ("queue", "clear-stale-locks", "--scheduler-url", UNREACHABLE_URL),
    ],
)
def test_unreachable_service_exits_3_with_one_clean_line(run, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: cannot reach {UNREACHABLE_URL}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_health_reports_unreachable_services(run) -> None:
    result = run("health", "--scheduler-url", UNREACHABLE_URL, "--registry-url",
                 UNREACHABLE_URL, "-o", "json")
    assert result.exit_code == 3
    body = json.loads(result.stdout)
    assert {s["status"] for s in body["services"]} == {"unreachable"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("job", "show", "abc"), "not a valid integer"),
        (("enqueue", "noop", "--payload", "{not json"), "not valid JSON"),
        (("enqueue", "noop", "--count", "2", "--unique-key", "k"), "--unique-key"),
        (("enqueue", "noop", "--priority", "5000"), "--priority"),
        (("worker", "stop"), "WORKER_ID or --worker-id"),
        (("frobnicate",), "No such command"),
        (("job", "list", "--output", "yaml"), "'yaml' is not one of"),
        (("failover", "events", "--limit", "0"), "--limit"),
        (("worker", "failover-recovery", "--force=yes"), "--force"),
    ],
)
def test_usage_errors_exit_2(run, args: tuple[str, ...], needle: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_db_status_exits_1_and_migrate_3_when_the_database_is_unreachable(run) -> None:
    url = "postgresql://postgres@127.0.0.1:1/qstack"
    status = run("db", "status", "--db", url)
    assert status.exit_code == 1
    assert status.stderr.startswith("error: database postgresql://postgres@127.0.0.1:1/qstack")
    assert run("db", "migrate", "--db", url).exit_code == 3


def test_help_documents_the_exit_codes(run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for line in ("0  ok", "2  usage error", "3  a service or the database could not be",
                 "4  authentication failed", "5  not found"):
        assert line in result.output
    assert "failover" in result.output and "--failover-url" in result.output
    workers = run("worker", "--help").output
    assert "failover-recovery" in workers and "cleanup-crashed" in workers
    queues = run("queue", "--help").output
    assert "list-locks" in queues and "clear-stale-locks" in queues


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (Unauthorized("no token"), 4),
        (Forbidden("GET /admin/queue/stats: 403 not from an allowed network"), 4),
        (NotFound("job 9"), 5),
        (ValidationFailed("bad task"), 2),
        (ServiceUnavailable("POST /api/v1/jobs: 503 storage down"), 3),
        (StorageError("postgres down"), 3),
        (QstackError("boom"), 1),
    ],
)
def test_exit_code_for_each_error_kind(exc: QstackError, code: int) -> None:
    assert exit_code_for(exc) == code


def test_a_403_is_forbidden_not_a_token_problem() -> None:
    import httpx

    from qctl.errors import describe
    from qshared.client import raise_for_response

    resp = httpx.Response(403, json={"error": {"code": "forbidden", "message": "denied"}},
                          request=httpx.Request("GET", "http://gw/admin/queue/stats"))
    with pytest.raises(Forbidden) as info:
        raise_for_response(resp)
    assert info.value.code == "forbidden" and "QSTACK_GATEWAY_ADMIN_ALLOW" in describe(info.value)


def test_cli_error_is_a_click_exception() -> None:
    from qctl.errors import CliError

    assert isinstance(CliError("x", 4), click.ClickException)
    assert CliError("x", 4).exit_code == 4


# -- embedded PostgreSQL ----------------------------------------------------------------
def test_embedded_postgres_starts_serves_asyncpg_and_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    pg = EmbeddedPostgres(data_dir)
    try:
        dsn = pg.start()
        pid = pg.pid
        assert pid and process_alive(pid)
        assert running_dsn(data_dir) == dsn

        async def query() -> tuple[str, int]:
            conn = await asyncpg.connect(dsn)
            try:
                return await conn.fetchval("SELECT current_database()"), await conn.fetchval(
                    "SELECT 1 + 1")
            finally:
                await conn.close()

        assert asyncio.run(query()) == ("qstack", 2)
        with pytest.raises(StorageError, match="in use by another qctl"):
            EmbeddedPostgres(data_dir).start()
    finally:
        pg.stop()
    assert not process_alive(pid)
    assert running_dsn(data_dir) is None
    assert not (data_dir / "postmaster.pid").exists()
    assert os.path.isdir(data_dir)  # the data stays for the next start
