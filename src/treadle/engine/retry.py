"""How long to wait before the next attempt of a failed step, and whether there is one.

Invariants: attempts count from 1; the wait doubles per failed attempt and never exceeds the
policy's ``max_backoff_seconds``.
"""

from __future__ import annotations

from treadle.engine.dag import RetryPolicy

# 2**62 seconds is already far beyond any cap; stopping there keeps the float finite.
_MAX_EXPONENT = 62


def backoff_seconds(policy: RetryPolicy, failed_attempt: int) -> float:
    """Seconds to wait after attempt ``failed_attempt`` failed: 1 s, 2 s, 4 s … up to the cap.

    Args:
        policy: The node's retry policy.
        failed_attempt: The attempt that just failed, counting from 1.
    """
    exponent = min(max(failed_attempt - 1, 0), _MAX_EXPONENT)
    return float(min(policy.backoff_seconds * 2.0**exponent, policy.max_backoff_seconds))


def can_retry(policy: RetryPolicy, failed_attempt: int) -> bool:
    """Whether another attempt is allowed after attempt ``failed_attempt`` failed."""
    return failed_attempt < policy.max_attempts
