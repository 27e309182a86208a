"""Failover rules: who is declared dead, and the guards that hold a verdict back."""

from __future__ import annotations

from qfailover.detection import Rules, judge

RULES = Rules(heartbeat_interval=2.0, ttl=10.0, settle=6.0)
UP = {"db_ok_for": 600.0, "registry_ok_for": 600.0}


def worker(wid: str, heartbeat_age: float, *, alive: bool, registered_age: float = 300.0) -> dict:
    return {"id": wid, "status": "active", "heartbeat_age_s": heartbeat_age,
            "registered_age_s": registered_age, "session_alive": alive}


def healthy(n: int) -> list[dict]:
    return [worker(f"ok{i}", 0.5, alive=True) for i in range(n)]


def test_crash_confirm_is_one_interval_plus_half_a_second() -> None:
    assert RULES.crash_confirm == 2.5
    assert Rules(heartbeat_interval=0.2, ttl=1, settle=1).crash_confirm == 0.7


def test_a_free_lock_and_a_heartbeat_older_than_the_interval_is_a_crash() -> None:
    verdict = judge([worker("w1", 2.6, alive=False), *healthy(2)], RULES, **UP)
    [(wid, event_type, reason)] = verdict.dead
    assert (wid, event_type) == ("w1", "worker_crashed")
    assert "session lock gone" in reason and "2.6s" in reason
    assert (verdict.held_back, verdict.note) == ([], None)


def test_the_crash_boundary_is_crash_confirm() -> None:
    assert judge([worker("w1", 2.5, alive=False)], RULES, **UP).dead[0][0] == "w1"
    # within the interval a free lock alone is not enough: the session may be reconnecting
    verdict = judge([worker("w1", 2.4, alive=False)], RULES, **UP)
    assert (verdict.dead, verdict.held_back, verdict.note) == ([], [], None)


def test_a_live_session_with_a_late_heartbeat_is_not_a_crash() -> None:
    verdict = judge([worker("w1", 9.9, alive=True), *healthy(2)], RULES, **UP)
    assert (verdict.dead, verdict.held_back, verdict.note) == ([], [], None)


def test_a_fresh_registration_is_not_a_crash() -> None:
    # registered a moment ago: its lock and first heartbeat may still be on their way
    young = worker("new", 2.4, alive=False, registered_age=2.4)
    verdict = judge([young, *healthy(2)], RULES, **UP)
    assert (verdict.dead, verdict.held_back) == ([], [])
    # the younger of the two ages decides
    revived = worker("new", 50.0, alive=False, registered_age=1.0)
    assert judge([revived], RULES, **UP).dead == []
    older = worker("new", 3.0, alive=False, registered_age=3.0)
    assert [d[0] for d in judge([older], RULES, **UP).dead] == ["new"]


def test_a_held_lock_without_heartbeats_for_the_ttl_is_unresponsive() -> None:
    verdict = judge([worker("hung", 10.0, alive=True), *healthy(2)], RULES, **UP)
    [(wid, event_type, reason)] = verdict.dead
    assert (wid, event_type) == ("hung", "worker_unresponsive")
    assert "no heartbeat for 10.0s" in reason and "TTL 10s" in reason
    assert "session still open" in reason
    assert verdict.note is None


def test_nothing_is_declared_until_the_database_has_settled() -> None:
    workers = [worker("crashed", 30.0, alive=False), worker("hung", 30.0, alive=True)]
    workers += healthy(3)
    verdict = judge(workers, RULES, db_ok_for=5.9, registry_ok_for=600.0)
    assert verdict.dead == []
    assert verdict.held_back == ["crashed", "hung"]
    assert "database reachable for only 5.9s" in verdict.note and "settle 6s" in verdict.note
    settled = judge(workers, RULES, db_ok_for=6.0, registry_ok_for=600.0)
    assert sorted(d[0] for d in settled.dead) == ["crashed", "hung"]
    assert settled.held_back == []


def test_the_settle_guard_says_nothing_when_nobody_is_suspect() -> None:
    verdict = judge(healthy(3), RULES, db_ok_for=0.0, registry_ok_for=0.0)
    assert (verdict.dead, verdict.held_back, verdict.note) == ([], [], None)


def test_ttl_deaths_need_a_registry_healthy_for_a_whole_ttl() -> None:
    workers = [worker("crashed", 30.0, alive=False), worker("hung", 30.0, alive=True)]
    workers += healthy(3)
    verdict = judge(workers, RULES, db_ok_for=600.0, registry_ok_for=9.0)
    # the free lock is proof enough; the silence may be the registry's fault
    assert [(d[0], d[1]) for d in verdict.dead] == [("crashed", "worker_crashed")]
    assert verdict.held_back == ["hung"]
    assert "registry has been healthy for only 9.0s" in verdict.note
    later = judge(workers, RULES, db_ok_for=600.0, registry_ok_for=10.0)
    assert sorted(d[0] for d in later.dead) == ["crashed", "hung"]


def test_many_silent_workers_with_locks_held_are_not_declared() -> None:
    silent = [worker(f"s{i}", 12.0, alive=True) for i in range(3)]
    verdict = judge(silent + healthy(2), RULES, **UP)
    assert verdict.dead == []
    assert verdict.held_back == ["s0", "s1", "s2"]
    assert "3 of 5 workers fell silent at once" in verdict.note
    assert "suspect the registry or the network" in verdict.note


def test_the_mass_guard_needs_more_than_half_and_more_than_one() -> None:
    # exactly half is not more than half
    half = [worker(f"s{i}", 12.0, alive=True) for i in range(2)] + healthy(2)
    assert sorted(d[0] for d in judge(half, RULES, **UP).dead) == ["s0", "s1"]
    # the only worker falling silent is one worker, not a mass event
    alone = judge([worker("s0", 12.0, alive=True)], RULES, **UP)
    assert [(d[0], d[1]) for d in alone.dead] == [("s0", "worker_unresponsive")]
    assert alone.held_back == []
    # two of two are held back
    pair = judge([worker(f"s{i}", 12.0, alive=True) for i in range(2)], RULES, **UP)
    assert (pair.dead, pair.held_back) == ([], ["s0", "s1"])


def test_the_mass_guard_still_declares_crashes() -> None:
    silent = [worker(f"s{i}", 12.0, alive=True) for i in range(3)]
    verdict = judge([*silent, worker("gone", 12.0, alive=False)], RULES, **UP)
    assert [(d[0], d[1]) for d in verdict.dead] == [("gone", "worker_crashed")]
    assert verdict.held_back == ["s0", "s1", "s2"]
    assert "3 of 4 workers" in verdict.note


def test_a_real_mass_crash_is_declared() -> None:
    # every lock is free: the processes are gone, whatever happened to the registry
    crashed = [worker(f"w{i}", 12.0, alive=False) for i in range(4)]
    verdict = judge(crashed + healthy(1), RULES, db_ok_for=600.0, registry_ok_for=0.0)
    assert sorted(d[0] for d in verdict.dead) == ["w0", "w1", "w2", "w3"]
    assert {d[1] for d in verdict.dead} == {"worker_crashed"}
    assert (verdict.held_back, verdict.note) == ([], None)


def test_force_skips_every_guard() -> None:
    workers = [worker(f"s{i}", 12.0, alive=True) for i in range(3)]
    workers += [worker("gone", 12.0, alive=False)]
    verdict = judge(workers, RULES, db_ok_for=0.0, registry_ok_for=0.0, force=True)
    assert sorted((d[0], d[1]) for d in verdict.dead) == [
        ("gone", "worker_crashed"), ("s0", "worker_unresponsive"),
        ("s1", "worker_unresponsive"), ("s2", "worker_unresponsive"),
    ]
    assert (verdict.held_back, verdict.note) == ([], None)


def test_force_does_not_declare_the_living() -> None:
    workers = [*healthy(2), worker("young", 9.0, alive=False, registered_age=1.0)]
    verdict = judge(workers, RULES, db_ok_for=0.0, registry_ok_for=0.0, force=True)
    assert (verdict.dead, verdict.held_back) == ([], [])


def test_no_workers_no_verdict() -> None:
    verdict = judge([], RULES, db_ok_for=0.0, registry_ok_for=0.0)
    assert (verdict.dead, verdict.held_back, verdict.note) == ([], [], None)
