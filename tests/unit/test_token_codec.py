"""TokenCodec: a verified token is remembered until it expires, and only a verified one."""

from __future__ import annotations

import time
import uuid

import pytest

from treadle.errors import UnauthenticatedError
from treadle.security import Actor, Role, TokenCodec

SECRET = "token-codec-test-secret-" + "x" * 32
ACTOR = Actor(uuid.UUID(int=1), uuid.UUID(int=2), Role.ADMIN)


def test_a_verified_token_is_remembered_and_verifies_to_the_same_actor() -> None:
    codec = TokenCodec(SECRET, 3600)
    token = codec.issue(ACTOR)
    first = codec.verify(token)
    assert len(codec) == 1
    second = codec.verify(token)
    assert second == first
    assert (second.user_id, second.tenant_id, second.role) == (
        ACTOR.user_id,
        ACTOR.tenant_id,
        ACTOR.role,
    )


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    codec = TokenCodec(SECRET, 1)
    token = codec.issue(ACTOR)
    codec.verify(token)
    time.sleep(1.1)
    with pytest.raises(UnauthenticatedError):
        codec.verify(token)
    assert len(codec) == 0


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # signature
        lambda t: t + "x",
        lambda t: "\ud800" + t,  # a lone surrogate (a GraphQL payload can carry one)
    ],
)
def test_only_verified_tokens_are_remembered(tamper: object) -> None:
    codec = TokenCodec(SECRET, 3600)
    token = codec.issue(ACTOR)
    codec.verify(token)
    with pytest.raises(UnauthenticatedError):
        codec.verify(tamper(token))  # type: ignore[operator]
    assert len(codec) == 1


def test_another_secret_refuses_the_token_however_often_it_was_seen() -> None:
    token = TokenCodec(SECRET, 3600).issue(ACTOR)
    other = TokenCodec("another-secret-" + "y" * 40, 3600)
    for _ in range(2):
        with pytest.raises(UnauthenticatedError):
            other.verify(token)


def test_the_cache_is_bounded() -> None:
    codec = TokenCodec(SECRET, 3600, cache_size=3)
    tokens = [codec.issue(ACTOR, now=time.time() - n) for n in range(5)]
    for token in tokens:
        codec.verify(token)
    assert len(codec) == 3
    assert codec.verify(tokens[0]) == codec.verify(tokens[0])
