"""APPROVAL through execute_step: it parks itself with a STEP_WAITING payload, keeps waiting
without a deadline, and resolves per ``onTimeout`` once woken after it; who may approve."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError

from tests.unit.test_pure_steps import NOW, make_ctx
from treadle.engine.executor import Succeeded, Waiting, execute_step
from treadle.engine.steps import approval
from treadle.security import Actor, Role
from treadle.services.approval import may_approve

STEP = approval.STEP


def config(**values: object) -> approval.Config:
    return approval.Config.model_validate({"prompt": "Pay {{ input.n }}?", **values})


async def test_the_first_attempt_waits_until_the_deadline_with_the_rendered_prompt() -> None:
    outcome = await execute_step(
        STEP, config(timeoutSeconds=60, approvers=["A@x.test"]), make_ctx(), timeout_seconds=5
    )
    assert outcome == Waiting(
        NOW + timedelta(seconds=60),
        {
            "prompt": "Pay 3?",
            "approvers": ["a@x.test"],
            "expiresAt": (NOW + timedelta(seconds=60)).isoformat(),
            "onTimeout": "reject",
        },
    )


async def test_without_a_timeout_it_waits_and_keeps_waiting_silently() -> None:
    first = await execute_step(STEP, config(), make_ctx(), timeout_seconds=5)
    assert isinstance(first, Waiting)
    assert first.until == NOW + approval.REWAIT
    later = NOW + approval.REWAIT
    again = await execute_step(
        STEP, config(), make_ctx(now=later, resumed_until=later), timeout_seconds=5
    )
    assert again == Waiting(later + approval.REWAIT)  # no second STEP_WAITING


@pytest.mark.parametrize(("on_timeout", "approved"), [("reject", False), ("approve", True)])
async def test_woken_after_the_deadline_it_resolves_per_on_timeout(
    on_timeout: str, approved: bool
) -> None:
    deadline = NOW + timedelta(seconds=60)
    woken = make_ctx(now=deadline + timedelta(seconds=1), resumed_until=deadline)
    outcome = await execute_step(
        STEP, config(timeoutSeconds=60, onTimeout=on_timeout), woken, timeout_seconds=5
    )
    assert outcome == Succeeded(
        {"approved": approved, "by": None, "comment": None, "data": None, "timedOut": True}
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"approvers": "OWNER"},
        {"approvers": []},
        {"approvers": ["not-an-email"]},
        {"timeoutSeconds": 0},
        {"onTimeout": "maybe"},
        {"prompt": ""},
    ],
)
def test_bad_configs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        config(**bad)


def test_who_may_approve() -> None:
    admin = Actor(uuid.uuid4(), uuid.uuid4(), Role.ADMIN)
    member = Actor(uuid.uuid4(), uuid.uuid4(), Role.MEMBER)
    assert may_approve(config(), member, "m@x.test")
    assert may_approve(config(approvers="MEMBER"), member, "m@x.test")
    assert may_approve(config(approvers="ADMIN"), admin, "a@x.test")
    assert not may_approve(config(approvers="ADMIN"), member, "m@x.test")
    listed = config(approvers=["M@X.test"])
    assert may_approve(listed, member, " m@x.TEST ")
    assert not may_approve(listed, admin, "a@x.test")
