"""The one backoff rule: upload retries, webhook retries, CDR polls and in-call retries."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff(
    attempt: int,
    *,
    first: float,
    cap: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before try `attempt + 1` (attempt 0: `first`), doubling up to `cap`,
    plus up to `jitter` (a fraction) more at random, so that what failed together does
    not all come back together."""
    step = min(max(attempt, 0), 64)  # 2**64 times anything is past any cap
    return min(first * 2.0**step, cap) * (1 + jitter * rand())
