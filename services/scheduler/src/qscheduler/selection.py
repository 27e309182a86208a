"""Worker selection: a worker that can start the job at once first, then fewer recent
assignments, then more free slots (pure logic)."""

from __future__ import annotations

import heapq
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping

from qshared.storage.base import PendingJob, WorkerSlots


def choose(
    jobs: Iterable[PendingJob], workers: Iterable[WorkerSlots], recent: Mapping[str, int]
) -> list[tuple[int, str]]:
    """Assign jobs (highest priority, then earliest run_at, first) to workers.

    Each job goes to an eligible worker (serves its queue, has a free slot), chosen by, in
    order:
    1. one that can start it at once (fewer jobs in flight than its concurrency) over one
       that would queue it behind others (its prefetch), so no job waits behind a busy
       worker's queue while another worker has a runner idle;
    2. fewer recent assignments, so equal workers receive equal shares whatever their free
       slots were at this instant (a worker a few milliseconds slower to report would
       otherwise lose every tie of free slots, and its share with them);
    3. more free slots, then the lower id.
    A worker whose slots are all taken receives nothing, so under a backlog each worker gets
    what it finishes. Jobs no worker can take are left out, and so is a job whose lock_key an
    earlier job of the batch took (the two must not run together).

    Returns:
        (job id, worker id) pairs.
    """
    free: dict[str, int] = {}
    rec: dict[str, int] = {}
    prefetch: dict[str, int] = {}
    queues_of: dict[str, tuple[str, ...]] = {}
    heaps: dict[str, list[tuple[bool, int, int, str]]] = defaultdict(list)

    def key(wid: str) -> tuple[bool, int, int, str]:
        return (free[wid] <= prefetch[wid], rec[wid], -free[wid], wid)

    for w in workers:
        if w.free <= 0:
            continue
        free[w.id], rec[w.id], queues_of[w.id] = w.free, recent.get(w.id, 0), w.queues
        prefetch[w.id] = w.prefetch
        for q in w.queues:
            heaps[q].append(key(w.id))
    for heap in heaps.values():
        heapq.heapify(heap)

    pairs: list[tuple[int, str]] = []
    taken_keys: set[str] = set()
    for job in sorted(jobs, key=lambda j: (-j.priority, j.run_at, j.id)):
        if job.lock_key is not None and job.lock_key in taken_keys:
            continue
        heap = heaps.get(job.queue_name)
        while heap:
            wid = heap[0][3]
            if free[wid] > 0 and heap[0] == key(wid):
                break
            heapq.heappop(heap)  # stale entry: the worker changed since it was pushed
        if not heap:
            continue
        wid = heap[0][3]
        pairs.append((job.id, wid))
        if job.lock_key is not None:
            taken_keys.add(job.lock_key)
        free[wid] -= 1
        rec[wid] += 1
        if free[wid] > 0:
            for q in queues_of[wid]:
                heapq.heappush(heaps[q], key(wid))
    return pairs


class RecentAssignments:
    """Assignments per worker over a sliding window, in one-second buckets."""

    def __init__(self, window_s: int = 60) -> None:
        self.window_s = window_s
        self._buckets: deque[tuple[int, dict[str, int]]] = deque()

    def add(self, pairs: Iterable[tuple[int, str]], now: float | None = None) -> None:
        second = int(now if now is not None else time.monotonic())
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, defaultdict(int)))
        bucket = self._buckets[-1][1]
        for _job, wid in pairs:
            bucket[wid] += 1

    def counts(self, now: float | None = None) -> dict[str, int]:
        horizon = int(now if now is not None else time.monotonic()) - self.window_s
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        total: dict[str, int] = defaultdict(int)
        for _second, bucket in self._buckets:
            for wid, n in bucket.items():
                total[wid] += n
        return total
