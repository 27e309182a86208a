"""The pool doctor's rules (`worker validate-pool`) and the pool configuration helpers."""

from __future__ import annotations

from typing import Any

import pytest

from qregistry.doctor import CHECKS, Limits, diagnose, report
from qshared.config import Settings
from qshared.pool import POOL_SETTINGS, config_skew, database_of, pool_config

LIMITS = Limits(ttl=10.0, lock_grace=60.0, max_clock_skew_ms=1000.0)
CONFIG = {"worker_health_check_interval": 2.0, "tasks": ["echo", "noop"], "python": "3.11.7"}


def worker(id: str, **over: Any) -> dict[str, Any]:
    row = {"id": id, "status": "active", "heartbeat_age_s": 1.0, "queues": "default",
           "version": "0.1.0", "config": dict(CONFIG), "in_flight": 0, "clock_skew_ms": -3.0}
    row.update(over)
    return row


def queue(name: str, pending: int = 0, **over: Any) -> dict[str, Any]:
    row = {"queue_name": name, "pending": pending, "scheduled": 0, "assigned": 0,
           "running": 0, "paused": False}
    row.update(over)
    return row


def lock(key: str, live: bool = True, expires_in_s: float = 3.0, **over: Any) -> dict[str, Any]:
    return {"lock_key": key, "live": live, "expires_in_s": expires_in_s, "worker_id": None,
            **over}


LEADERS = [lock("qstack:leader:dispatcher"), lock("qstack:leader:failover")]


def found(problems) -> set[tuple[str, str]]:
    return {(p.check, p.subject) for p in problems}


def test_a_healthy_pool_has_no_problems():
    workers = [worker("w1"), worker("w2", queues="default,emails", config={**CONFIG,
                                                                          "python": "3.12.1"})]
    problems = diagnose(workers, [queue("default", 5), queue("emails", 1)], LEADERS, LIMITS)
    assert problems == []
    out = report(problems, workers=2, queues=2)
    assert out["ok"] and set(out["checks"]) == set(CHECKS) and not any(out["checks"].values())


def test_no_active_worker_and_unserved_queues():
    workers = [worker("w1", status="draining", queues="emails")]
    queues = [queue("default", 2), queue("emails", scheduled=3), queue("idle")]
    problems = diagnose(workers, queues, LEADERS, LIMITS)
    assert found(problems) == {("workers", "pool"), ("unserved_queues", "default"),
                               ("unserved_queues", "emails")}
    emails = next(p for p in problems if p.subject == "emails")
    assert "only draining workers" in emails.message and "3 job(s)" in emails.message


def test_a_paused_unserved_queue_says_so():
    problems = diagnose([worker("w1")], [queue("reports", 1, paused=True)], LEADERS, LIMITS)
    assert "paused" in problems[0].message


def test_stale_heartbeats_count_only_for_workers_that_look_alive():
    workers = [worker("w1"), worker("old", heartbeat_age_s=11.0),
               worker("gone", status="failed", heartbeat_age_s=500.0)]
    problems = diagnose(workers, [], LEADERS, LIMITS)
    assert found(problems) == {("stale_heartbeats", "old")}


def test_version_and_config_skew_among_live_workers_only():
    workers = [worker("a"), worker("b", version="0.2.0",
                                   config={**CONFIG, "worker_health_check_interval": 5.0}),
               worker("c", status="stopped", version="0.0.1", config={"tasks": []})]
    problems = diagnose(workers, [], LEADERS, LIMITS)
    assert found(problems) == {("version_skew", "pool"),
                               ("config_skew", "worker_health_check_interval")}
    skew = next(p for p in problems if p.check == "config_skew")
    assert "'2.0': a" in skew.message and "'5.0': b" in skew.message


def test_orphaned_jobs_of_stopped_workers():
    workers = [worker("a"), worker("b", status="stopped", in_flight=2)]
    assert found(diagnose(workers, [], LEADERS, LIMITS)) == {("orphaned_jobs", "b")}


def test_lock_leaks_and_missing_leaders():
    workers = [worker("a"), worker("b", status="failed")]
    locks = [lock("qstack:leader:dispatcher"),
             lock("held-by-failed", worker_id="b"), lock("held-by-unknown", worker_id="zz"),
             lock("held-by-live", worker_id="a"),
             lock("long-expired", live=False, expires_in_s=-61.0),
             lock("just-expired", live=False, expires_in_s=-5.0)]
    problems = diagnose(workers, [], locks, LIMITS)
    assert found(problems) == {("lock_leaks", "held-by-failed"), ("lock_leaks", "held-by-unknown"),
                               ("lock_leaks", "long-expired"), ("leaders", "failover")}


@pytest.mark.parametrize(("skew", "bad"), [(999.0, False), (-1500.0, True), (2500.0, True),
                                           (None, False)])
def test_clock_skew(skew, bad):
    problems = diagnose([worker("a", clock_skew_ms=skew)], [], LEADERS, LIMITS)
    assert found(problems) == ({("clock_skew", "a")} if bad else set())
    if bad:
        assert ("ahead of" if skew > 0 else "behind") in problems[0].message


def test_config_skew_ignores_informational_keys_and_workers_without_config():
    configs = {"a": {"python": "3.11", "x": 1}, "b": {"python": "3.12", "x": 1}, "c": {}}
    assert config_skew(configs) == {}
    configs["b"] = {"x": 2, "tasks": ["a", "b"]}
    configs["a"]["tasks"] = ["a"]
    assert config_skew(configs) == {"tasks": {"a": ["a"], "a,b": ["b"]},
                                    "x": {"1": ["a"], "2": ["b"]}}


def test_pool_config_has_the_pool_settings_and_no_secrets():
    settings = Settings(database_url="postgresql://u:secret@db:5432/q?search_path=s&password=x",
                        qstack_token="t0ken")
    config = pool_config(settings, ["noop", "echo"])
    assert set(POOL_SETTINGS) <= set(config)
    assert config["database"] == "postgresql://db:5432/q?search_path=s"
    assert config["tasks"] == ["echo", "noop"]
    assert "secret" not in str(config) and "t0ken" not in str(config)
    assert database_of("mysql://root@127.0.0.1/test") == "mysql://127.0.0.1/test"
