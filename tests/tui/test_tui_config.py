"""Where qtui connects: options, QSTACK_* variables and qctl's contexts (now in qshared)."""

from __future__ import annotations

from pathlib import Path

import pytest

import qctl.contexts
import qshared.contexts
from qshared.contexts import Context, ContextStore
from qshared.errors import NotFound
from qtui.__main__ import main
from qtui.config import connection


@pytest.fixture
def store(tmp_path: Path) -> ContextStore:
    s = ContextStore(tmp_path / "contexts.json")
    s.put(Context("local", scheduler_url="http://127.0.0.1:8082", registry_url="http://127.0.0.1:8081",
                  failover_url="http://127.0.0.1:8083", token="local-token"))
    s.put(Context("prod", gateway_url="https://queue.example.com/", token="prod-token"))
    return s


def test_qctl_re_exports_the_shared_context_model():
    for name in ("Context", "ContextStore", "Target", "resolve", "config_dir", "LOCAL_CONTEXT"):
        assert getattr(qctl.contexts, name) is getattr(qshared.contexts, name)


def test_the_current_context_is_used(store):
    conn = connection([], env={}, store=store)
    assert (conn.scheduler_url, conn.registry_url, conn.failover_url) == (
        "http://127.0.0.1:8082", "http://127.0.0.1:8081", "http://127.0.0.1:8083")
    assert conn.token == "local-token" and conn.context == "local" and conn.refresh == 1.0


def test_a_context_with_one_gateway_url_serves_every_service(store):
    conn = connection(["--context", "prod"], env={"QSTACK_TOKEN": "env-token"}, store=store)
    assert {conn.scheduler_url, conn.registry_url, conn.failover_url} == {"https://queue.example.com"}
    assert conn.token == "prod-token"  # a context named on the command line beats the environment


def test_options_beat_the_environment_which_beats_the_context(store):
    env = {"QSTACK_REGISTRY_URL": "http://env-registry:1", "QSTACK_PROMETHEUS_URL": "http://prom:9090/",
           "QSTACK_TUI_REFRESH": "2.5"}
    conn = connection(["--url", "http://gw", "--scheduler-url", "http://sched:2", "--token", "opt"],
                      env=env, store=store)
    assert conn.scheduler_url == "http://sched:2"  # its own option beats --url
    assert conn.registry_url == "http://gw" and conn.failover_url == "http://gw"
    assert conn.token == "opt" and conn.prometheus_url == "http://prom:9090" and conn.refresh == 2.5
    env_only = connection([], env=env, store=store)
    assert env_only.registry_url == "http://env-registry:1"
    assert env_only.scheduler_url == "http://127.0.0.1:8082"  # from the context


def test_bad_usage_and_unknown_contexts(store, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        connection(["--refresh", "0"], env={}, store=store)
    with pytest.raises(NotFound):
        connection(["--context", "nope"], env={}, store=store)
    monkeypatch.setenv("QSTACK_CONFIG_DIR", str(tmp_path))
    assert main(["--context", "nope"]) == 2
    assert "no context named 'nope'" in capsys.readouterr().err
