"""The lock manager over HTTP: lease semantics, waiting, mutual exclusion under load, hold()."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from raw_sql import raw_sql
from stack_fixtures import on_each_database

from qshared.errors import Conflict
from qshared.locks import LockLost, Locks
from qshared.storage import mysql_sessions
from qshared.storage.queries import load_queries

pytestmark = [pytest.mark.e2e, on_each_database]


@pytest.fixture(scope="module")
def stack(start_stack):
    return start_stack(workers=0)


def new_key(prefix: str = "t") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:10]}"


def path(key: str, action: str = "") -> str:
    return f"/api/v1/locks/{quote(key, safe='')}{action}"


def error_of(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()["error"]


def release_elsewhere(db, key: str) -> None:
    """Release `key` as another scheduler would: delete its row and wake the lock waiters
    (a NOTIFY on PostgreSQL, a qstack_notifications row on MySQL), in one transaction."""
    if db.dialect == "postgres":
        db.fetch("WITH d AS (DELETE FROM distributed_locks WHERE lock_key = $1 RETURNING lock_key)"
                 " SELECT pg_notify('qstack_locks', lock_key) FROM d", key)
        return

    async def go() -> None:
        async with raw_sql(db.dialect, db.url) as conn, conn.transaction():
            await conn.execute("DELETE FROM distributed_locks WHERE lock_key = $1", key)
            await conn.execute(load_queries("mysql")["notify"], {"channel": "qstack_locks"})

    asyncio.run(go())


def test_acquire_renew_release(http):
    key = new_key("a/b c")  # a slash and a space, URL-encoded in the path
    resp = http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert set(got) == {"key", "owner", "token", "expires_at"}
    assert (got["key"], got["owner"]) == (key, "alice")

    holder = http.get(path(key)).json()
    assert (holder["owner"], holder["token"], holder["live"]) == ("alice", got["token"], True)
    assert 29 < holder["expires_in_s"] <= 30

    renewed = http.post(path(key, "/renew"),
                        json={"owner": "alice", "token": got["token"], "ttl_ms": 60_000}).json()
    assert renewed["token"] == got["token"]
    assert renewed["expires_at"] > got["expires_at"]

    err = error_of(http.post(path(key), json={"owner": "bob", "ttl_ms": 1000}), 409)
    assert err["code"] == "lock_held"
    assert "'alice'" in err["message"] and "until" in err["message"]
    assert renewed["expires_at"][:19] in err["message"]  # when the holder's lease ends

    assert http.post(path(key, "/release"), json={"owner": "alice", "token": got["token"]}
                     ).json() == {"released": True}
    assert error_of(http.get(path(key)), 404)["code"] == "not_found"
    err = error_of(http.post(path(key, "/release"), json={"owner": "alice", "token": got["token"]}),
                   409)
    assert err["code"] == "lock_not_held"
    err = error_of(http.post(path(key, "/renew"),
                             json={"owner": "alice", "token": got["token"], "ttl_ms": 1000}), 409)
    assert err["code"] == "lock_lost" and err["message"].startswith("lock lost")


def test_release_by_another_owner_or_token_changes_nothing(http):
    key = new_key()
    got = http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000}).json()
    before = http.get(path(key)).json()
    for owner, token in (("mallory", got["token"]), ("alice", got["token"] + 1000)):
        err = error_of(http.post(path(key, "/release"), json={"owner": owner, "token": token}), 409)
        assert err["code"] == "lock_not_held" and repr(owner) in err["message"]
        err = error_of(http.post(path(key, "/renew"),
                                 json={"owner": owner, "token": token, "ttl_ms": 1}), 409)
        assert err["code"] == "lock_lost"
    after = http.get(path(key)).json()
    assert after == {**before, "expires_in_s": after["expires_in_s"]}


def test_an_expired_lease_goes_to_another_owner_with_a_larger_token(http):
    key = new_key()
    first = http.post(path(key), json={"owner": "alice", "ttl_ms": 150}).json()
    time.sleep(0.3)
    assert error_of(http.get(path(key)), 404)  # expired: nobody holds it
    second = http.post(path(key), json={"owner": "bob", "ttl_ms": 30_000}).json()
    assert second["token"] > first["token"]
    err = error_of(http.post(path(key, "/renew"),
                             json={"owner": "alice", "token": first["token"], "ttl_ms": 1000}), 409)
    assert err["code"] == "lock_lost"
    error_of(http.post(path(key, "/release"), json={"owner": "alice", "token": first["token"]}),
             409)
    assert http.get(path(key)).json()["owner"] == "bob"


def test_the_same_owner_retaking_gets_a_new_token(http):
    key = new_key()
    first = http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000}).json()
    again = http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000}).json()
    assert again["token"] > first["token"]
    error_of(http.post(path(key, "/release"), json={"owner": "alice", "token": first["token"]}),
             409)


def test_a_waiter_gets_the_lock_soon_after_the_release(http, stack):
    key = new_key()
    held = http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000}).json()
    result: dict = {}

    def waiter():
        with httpx.Client(base_url=stack.scheduler_url, timeout=30,
                          headers={"Authorization": f"Bearer {stack.token}"}) as c:
            resp = c.post(path(key), json={"owner": "bob", "ttl_ms": 30_000, "wait_ms": 10_000})
            result["resp"], result["at"] = resp, time.monotonic()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    assert "resp" not in result  # still waiting
    released_at = time.monotonic()
    http.post(path(key, "/release"), json={"owner": "alice", "token": held["token"]})
    thread.join(15)
    resp = result["resp"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["owner"] == "bob" and resp.json()["token"] > held["token"]
    assert result["at"] - released_at < 0.5, result["at"] - released_at


def test_a_release_elsewhere_wakes_the_waiter_through_the_notify(http, stack, db):
    """A release by another scheduler (here: SQL with the NOTIFY) wakes waiters at once.

    The waiters also poll every 0.2 s, so a single sample cannot tell the two apart: the
    median of ten wake-ups must be well under what polling alone would give (~0.1 s).
    MySQL has no NOTIFY: the scheduler reads qstack_notifications every
    mysql_sessions.POLL_S (50 ms), and with the 0.3 s pause below (a multiple of it) the
    releases land just after a read, so there the median is about that poll, not half of it.
    """
    bound = 0.04 if db.dialect == "postgres" else mysql_sessions.POLL_S + 0.03
    latencies = []
    for _ in range(10):
        key = new_key("notify")
        http.post(path(key), json={"owner": "elsewhere", "ttl_ms": 30_000})
        result: dict = {}

        def waiter(key=key, result=result):
            with httpx.Client(base_url=stack.scheduler_url, timeout=30,
                              headers={"Authorization": f"Bearer {stack.token}"}) as c:
                resp = c.post(path(key), json={"owner": "bob", "ttl_ms": 1000, "wait_ms": 10_000})
                result["status"], result["at"] = resp.status_code, time.monotonic()

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)
        released_at = time.monotonic()
        release_elsewhere(db, key)
        thread.join(15)
        assert result["status"] == 200
        latencies.append(result["at"] - released_at)
    latencies.sort()
    print(f"\nwake-up after a NOTIFY: median {latencies[5] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    assert latencies[5] < bound, latencies


def test_a_waiter_that_hangs_up_does_not_end_up_holding_the_lock(http, stack):
    key = new_key("gone")
    held = http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000}).json()
    with httpx.Client(base_url=stack.scheduler_url, timeout=0.3,
                      headers={"Authorization": f"Bearer {stack.token}"}) as impatient:
        with pytest.raises(httpx.TimeoutException):
            impatient.post(path(key), json={"owner": "bob", "ttl_ms": 30_000, "wait_ms": 10_000})
    http.post(path(key, "/release"), json={"owner": "alice", "token": held["token"]})
    time.sleep(0.5)  # the abandoned request notices at its next attempt
    assert error_of(http.get(path(key)), 404)
    assert http.post(path(key), json={"owner": "carol", "ttl_ms": 1000}).status_code == 200


def test_a_wait_that_ends_is_a_409_naming_the_holder(http):
    key = new_key()
    http.post(path(key), json={"owner": "alice", "ttl_ms": 30_000})
    t0 = time.monotonic()
    err = error_of(http.post(path(key), json={"owner": "bob", "ttl_ms": 1000, "wait_ms": 300}), 409)
    assert 0.28 <= time.monotonic() - t0 < 2
    assert "'alice'" in err["message"] and "waited 300 ms" in err["message"]


def test_a_waiter_takes_over_a_lease_that_expires(http):
    key = new_key()
    held = http.post(path(key), json={"owner": "alice", "ttl_ms": 400}).json()
    t0 = time.monotonic()
    resp = http.post(path(key), json={"owner": "bob", "ttl_ms": 1000, "wait_ms": 5000})
    assert resp.status_code == 200, resp.text
    assert resp.json()["token"] > held["token"]
    assert time.monotonic() - t0 < 1.5  # the poll notices the end of the lease


BAD = [
    ("ttl zero", "k", {"owner": "a", "ttl_ms": 0}, "ttl_ms"),
    ("ttl over a day", "k", {"owner": "a", "ttl_ms": 86_400_001}, "ttl_ms"),
    ("wait too long", "k", {"owner": "a", "ttl_ms": 1, "wait_ms": 300_001}, "wait_ms"),
    ("unknown field", "k", {"owner": "a", "ttl_ms": 1, "colour": "red"}, "colour"),
    ("no owner", "k", {"ttl_ms": 1}, "owner"),
    ("empty owner", "k", {"owner": "", "ttl_ms": 1}, "owner"),
    ("key too long", "k" * 256, {"owner": "a", "ttl_ms": 1}, "256"),
    ("control character", "a\nb", {"owner": "a", "ttl_ms": 1}, "control"),
]


@pytest.mark.parametrize(("key", "body", "mention"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_a_400_naming_the_problem(http, key, body, mention):
    err = error_of(http.post(path(key), json=body), 400)
    assert err["code"] == "invalid_request" and mention in err["message"]
    assert http.get(path("k" * 255)).status_code == 404  # 255 characters is allowed


def test_locks_need_the_token(stack):
    with httpx.Client(base_url=stack.scheduler_url, timeout=10) as anon:
        assert anon.post(path("k"), json={"owner": "a", "ttl_ms": 1}).status_code == 401
        assert anon.get("/admin/queue/locks").status_code == 401


def test_eight_clients_on_one_key_never_overlap(stack):
    """THE acceptance test: mutual exclusion and increasing fencing tokens under contention."""
    key = new_key("hammer")
    log: list[tuple[str, int, float]] = []
    stop_at = time.monotonic() + 10.0

    async def client(n: int) -> int:
        count = 0
        async with Locks(stack.scheduler_url, stack.token) as locks:
            while time.monotonic() < stop_at:
                held = await locks.acquire(key, owner=f"client-{n}", ttl=10.0, wait=10.0)
                log.append(("enter", held.token, time.monotonic()))
                await asyncio.sleep(0.003)
                log.append(("exit", held.token, time.monotonic()))
                await locks.release(held)
                count += 1
        return count

    async def run() -> list[int]:
        return await asyncio.gather(*(client(n) for n in range(8)))

    counts = asyncio.run(run())
    acquisitions = len(log) // 2
    print(f"\n{acquisitions} acquisitions in 10 s by 8 clients ({acquisitions / 10:.0f}/s); "
          f"per client {counts}")
    assert len(log) == 2 * acquisitions
    for (kind_a, token_a, t_a), (kind_b, token_b, t_b) in itertools.pairwise(log):
        assert t_a <= t_b
        if kind_a == "enter":
            assert (kind_b, token_b) == ("exit", token_a), "two holders at once"
        else:
            assert kind_b == "enter"
            assert token_b > token_a, "a fencing token did not increase"
    assert log[0][0] == "enter" and log[-1][0] == "exit"
    assert acquisitions >= 200
    assert min(counts) > 0  # every client got its turn


def test_hold_renews_in_the_background_and_releases(stack, http):
    key = new_key("hold")

    async def run() -> tuple[int, list[int], int]:
        async with Locks(stack.scheduler_url, stack.token) as locks, \
                Locks(stack.scheduler_url, stack.token) as rival:
            refused = 0
            seen: list[int] = []
            async with locks.hold(key, ttl=1.0) as token:
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:
                    with pytest.raises(Conflict, match="held by"):
                        await rival.acquire(key, ttl=5.0)
                    refused += 1
                    seen.append((await rival.holder(key))["token"])
                    await asyncio.sleep(0.2)
            assert await rival.holder(key) is None  # released on exit
            return token, seen, refused

    token, seen, refused = asyncio.run(run())
    assert refused >= 10
    assert set(seen) == {token}  # the same lease all along, renewed, never re-taken
    got = http.post(path(key), json={"owner": "after", "ttl_ms": 1000}).json()
    assert got["token"] > token


def test_hold_raises_lock_lost_when_the_lease_was_taken_over(stack, http):
    key = new_key("lost")
    state: dict = {}

    async def run() -> None:
        async with Locks(stack.scheduler_url, stack.token) as locks:
            hold = locks.hold(key, ttl=0.6)
            async with hold as token:
                # the lease is taken away (released behind its back, then taken by another)
                owner = (await locks.holder(key))["owner"]
                http.post(path(key, "/release"), json={"owner": owner, "token": token})
                http.post(path(key), json={"owner": "thief", "ttl_ms": 30_000})
                await asyncio.sleep(0.5)
                state["lost_in_block"] = hold.lost  # the renewal at ttl/3 found out

    with pytest.raises(LockLost, match="lock lost"):
        asyncio.run(run())
    assert isinstance(state["lost_in_block"], LockLost)
    assert http.get(path(key)).json()["owner"] == "thief"


def test_admin_list_and_clear_stale_remove_only_expired_rows(http):
    stale, live = new_key("stale"), new_key("live")
    http.post(path(stale), json={"owner": "a", "ttl_ms": 50})
    http.post(path(live), json={"owner": "b", "ttl_ms": 60_000})
    time.sleep(0.15)
    rows = {r["key"]: r for r in http.get("/admin/queue/locks").json()["locks"]}
    assert set(rows[live]) == {"key", "owner", "worker_id", "token", "acquired_at",
                               "expires_at", "live", "expires_in_s"}
    assert rows[live]["live"] and rows[live]["expires_in_s"] > 50
    assert not rows[stale]["live"] and rows[stale]["expires_in_s"] < 0
    expired_before = {k for k, r in rows.items() if not r["live"]}

    cleared = http.post("/admin/queue/locks/clear-stale").json()
    assert cleared["cleared"] == len(cleared["keys"])
    assert stale in cleared["keys"] and live not in cleared["keys"]
    for k in cleared["keys"]:  # expired then, or within the second since
        assert k in expired_before or rows[k]["expires_in_s"] < 1, rows.get(k)
    after = {r["key"]: r for r in http.get("/admin/queue/locks").json()["locks"]}
    assert not set(cleared["keys"]) & set(after)
    assert after[live] == {**rows[live], "expires_in_s": after[live]["expires_in_s"]}
    assert http.get(path(live)).json()["owner"] == "b"
