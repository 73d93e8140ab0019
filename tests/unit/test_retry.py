"""Retry policy: doubling backoff with a cap, and the attempt limit."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from treadle.engine.dag import RetryPolicy
from treadle.engine.retry import backoff_seconds, can_retry


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_backoff_doubles_from_one_second(attempt: int, expected: float) -> None:
    assert backoff_seconds(RetryPolicy(), attempt) == expected


@pytest.mark.parametrize(("attempt", "expected"), [(1, 100.0), (2, 200.0), (3, 250.0), (50, 250.0)])
def test_backoff_is_capped(attempt: int, expected: float) -> None:
    policy = RetryPolicy(backoff_seconds=100, max_backoff_seconds=250)
    assert backoff_seconds(policy, attempt) == expected


def test_backoff_survives_absurd_attempt_numbers() -> None:
    assert backoff_seconds(RetryPolicy(), 10_000) == 300.0
    assert backoff_seconds(RetryPolicy(backoff_seconds=0), 10_000) == 0.0


@pytest.mark.parametrize(
    ("attempt", "allowed"), [(1, True), (2, True), (3, True), (4, False), (9, False)]
)
def test_the_default_policy_allows_four_attempts(attempt: int, allowed: bool) -> None:
    assert can_retry(RetryPolicy(), attempt) is allowed


def test_a_single_attempt_policy_never_retries() -> None:
    assert not can_retry(RetryPolicy(max_attempts=1), 1)


def test_policy_reads_camel_case_and_rejects_out_of_range_values() -> None:
    policy = RetryPolicy.model_validate(
        {"maxAttempts": 2, "backoffSeconds": 0.5, "maxBackoffSeconds": 9}
    )
    assert (policy.max_attempts, policy.backoff_seconds, policy.max_backoff_seconds) == (2, 0.5, 9)
    for bad in ({"maxAttempts": 0}, {"maxAttempts": 21}, {"backoffSeconds": -1}, {"other": 1}):
        with pytest.raises(ValidationError):
            RetryPolicy.model_validate(bad)
