"""Retry delays grow with each attempt, stay within the cap, and carry jitter."""

import random

from qworker.backoff import retry_delay


def test_delays_grow_and_are_jittered():
    rng = random.Random(7)
    for _ in range(200):
        delays = [retry_delay(n, 1.0, 3600, rng) for n in range(1, 8)]
        assert delays == sorted(delays)
        for n, d in enumerate(delays, start=1):
            nominal = 2 ** (n - 1)
            assert nominal / 2 <= d <= nominal
    samples = {round(retry_delay(3, 1.0, 3600, rng), 6) for _ in range(50)}
    assert len(samples) > 40  # jitter: not one fixed value


def test_cap_bounds_the_delay():
    rng = random.Random(1)
    assert all(retry_delay(30, 1.0, 60, rng) <= 60 for _ in range(100))
    assert all(retry_delay(30, 1.0, 60, rng) >= 30 for _ in range(100))
