"""Reconnect waits: exponential, capped, and jittered so many cameras do not retry in step."""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 60  # 2**60 times any sane initial wait is far past any cap; avoids overflow
_RNG = random.Random()


def backoff_delay(
    attempt: int,
    initial_s: float,
    max_s: float,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before reconnect `attempt` (1-based): initial, x2 each time, <= max_s.

    `jitter` is a fraction: the wait is scaled by a factor drawn from [1 - jitter, 1 + jitter]
    and still capped at `max_s`.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if initial_s <= 0 or max_s <= 0:
        raise ValueError(f"waits must be > 0, got initial {initial_s} s, max {max_s} s")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    delay = min(max_s, initial_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    if jitter:
        draw = (rng or _RNG).uniform(-jitter, jitter)
        delay = min(max_s, delay * (1.0 + draw))
    return delay
