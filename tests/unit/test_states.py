"""The step state machine: exactly the transitions in ALLOWED succeed."""

from __future__ import annotations

import pytest

from treadle.engine.states import ALLOWED, TERMINAL_STEP, StepStatus, transition
from treadle.errors import IllegalTransitionError

ALLOWED_PAIRS = [(current, target) for current, targets in ALLOWED.items() for target in targets]
DENIED_PAIRS = [
    (current, target)
    for current in StepStatus
    for target in StepStatus
    if target not in ALLOWED.get(current, frozenset())
]


@pytest.mark.parametrize(("current", "target"), ALLOWED_PAIRS)
def test_allowed_transitions(current: StepStatus, target: StepStatus) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(("current", "target"), DENIED_PAIRS)
def test_other_transitions_are_illegal(current: StepStatus, target: StepStatus) -> None:
    with pytest.raises(IllegalTransitionError, match=f"from {current} to {target}"):
        transition(current, target)


@pytest.mark.parametrize("status", sorted(TERMINAL_STEP))
def test_terminal_states_are_final(status: StepStatus) -> None:
    assert status not in ALLOWED


def test_every_pair_is_covered() -> None:
    assert len(ALLOWED_PAIRS) + len(DENIED_PAIRS) == len(StepStatus) ** 2
