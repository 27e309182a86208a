"""Worker selection: a worker that can start the job at once first, then fewer recent
assignments, then more free slots; equal shares."""

from datetime import UTC, datetime, timedelta

from qscheduler.selection import RecentAssignments, choose
from qshared.storage.base import PendingJob, WorkerSlots

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def jobs(n, queue="default", priority=0, start=1):
    return [PendingJob(start + i, queue, priority, T0 + timedelta(seconds=i)) for i in range(n)]


def slots(wid, in_flight, concurrency=4, prefetch=16, queues=("default",)):
    return WorkerSlots(wid, queues, concurrency + prefetch, in_flight, None, concurrency)


def test_at_equal_recent_assignments_most_free_slots_wins():
    workers = [WorkerSlots("a", ("default",), 10, 8), WorkerSlots("b", ("default",), 10, 2)]
    assert choose(jobs(1), workers, {}) == [(1, "b")]
    assert choose(jobs(1), [slots("a", 3), slots("b", 1)], {"a": 7, "b": 7}) == [(1, "b")]


def test_fewer_recent_assignments_win_among_workers_that_can_start_at_once():
    workers = [WorkerSlots("a", ("default",), 4, 0), WorkerSlots("b", ("default",), 4, 0)]
    assert choose(jobs(1), workers, {"a": 5, "b": 3}) == [(1, "b")]
    assert choose(jobs(1), workers, {"a": 1, "b": 3}) == [(1, "a")]
    # b has fewer free slots but a runner idle, and fewer recent assignments
    assert choose(jobs(1), [slots("a", 0), slots("b", 3)], {"a": 5, "b": 3}) == [(1, "b")]


def test_a_worker_that_can_start_at_once_wins_over_one_that_would_queue_the_job():
    # a: every runner busy (4 of 4), the job would wait in its prefetch queue; b: a runner idle
    workers = [slots("a", 4), slots("b", 3)]
    assert choose(jobs(1), workers, {"a": 0, "b": 100}) == [(1, "b")]
    # once no worker can start at once, recent assignments decide again
    pairs = choose(jobs(3), [slots("a", 4), slots("b", 4)], {"a": 0, "b": 100})
    assert [w for _, w in pairs] == ["a", "a", "a"]


def test_a_worker_slower_to_report_keeps_its_share_of_a_paced_load():
    """Single jobs one after another: c always still holds one job when the next comes (it
    reports a little later than a and b). Most-free-slots-first gave c none of them."""
    recent = RecentAssignments()
    counts = {"a": 0, "b": 0, "c": 0}
    for n in range(300):
        workers = [slots("a", 0), slots("b", 0), slots("c", 1)]
        [(_, wid)] = choose(jobs(1, start=n), workers, recent.counts(now=0))
        recent.add([(n, wid)], now=0)
        counts[wid] += 1
    assert counts == {"a": 100, "b": 100, "c": 100}


def test_equal_workers_get_equal_shares_and_capacity_is_respected():
    workers = [WorkerSlots(w, ("default",), 20, 0) for w in "abc"]
    pairs = choose(jobs(100), workers, {})
    assert len(pairs) == 60  # 3 x 20 free slots
    counts = {w: sum(1 for _, x in pairs if x == w) for w in "abc"}
    assert counts == {"a": 20, "b": 20, "c": 20}
    pairs = choose(jobs(30), workers, {})
    counts = {w: sum(1 for _, x in pairs if x == w) for w in "abc"}
    assert counts == {"a": 10, "b": 10, "c": 10}


def test_jobs_only_go_to_workers_serving_their_queue():
    workers = [WorkerSlots("a", ("emails",), 5, 0), WorkerSlots("b", ("default",), 5, 0)]
    pairs = choose(jobs(3, "emails") + jobs(3, "reports", start=10), workers, {})
    assert sorted(pairs) == [(1, "a"), (2, "a"), (3, "a")]


def test_higher_priority_is_assigned_first_when_room_is_short():
    workers = [WorkerSlots("a", ("default",), 2, 0)]
    low = jobs(3, priority=0)
    high = jobs(2, priority=10, start=100)
    assert [j for j, _ in choose(low + high, workers, {})] == [100, 101]


def test_full_workers_receive_nothing():
    workers = [WorkerSlots("a", ("default",), 4, 4)]
    assert choose(jobs(5), workers, {}) == []


def test_multi_queue_worker_state_is_shared_across_queues():
    workers = [WorkerSlots("a", ("q1", "q2"), 3, 0), WorkerSlots("b", ("q2",), 1, 0)]
    pairs = choose(jobs(3, "q1") + jobs(3, "q2", start=10), workers, {})
    assert sum(1 for _, w in pairs if w == "a") == 3
    assert sum(1 for _, w in pairs if w == "b") == 1


def test_recent_assignments_window():
    recent = RecentAssignments(window_s=10)
    recent.add([(1, "a"), (2, "a"), (3, "b")], now=100.0)
    recent.add([(4, "b")], now=105.0)
    assert recent.counts(now=105.0) == {"a": 2, "b": 2}
    assert recent.counts(now=111.0) == {"b": 1}
    assert recent.counts(now=200.0) == {}


def test_one_job_per_lock_key_in_a_batch():
    workers = [WorkerSlots("a", ("default",), 10, 0)]
    batch = [PendingJob(1, "default", 0, T0, "k"), PendingJob(2, "default", 0, T0, "k"),
             PendingJob(3, "default", 0, T0, "other"), PendingJob(4, "default", 0, T0, None)]
    assert sorted(j for j, _ in choose(batch, workers, {})) == [1, 3, 4]
