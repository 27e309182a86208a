"""Retry delays: exponential with equal jitter, so delays grow from one attempt to the next."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, base: float, cap: float, rng: random.Random | random.SystemRandom = random
) -> float:
    """Seconds before retry number `attempt` (1 after the first failure).

    The nominal delay doubles each attempt up to `cap`; the result lies in
    [nominal / 2, nominal], so each attempt waits at least as long as the one before.
    """
    nominal = min(base * (2 ** max(attempt - 1, 0)), cap)
    return nominal / 2 + rng.uniform(0, nominal / 2)
