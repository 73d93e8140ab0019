"""The step state machine: exactly the transitions written out below succeed.

The table is written here by hand, not derived from ``ALLOWED``: a transition added to or
dropped from the engine by mistake then fails a test instead of changing what it expects.
"""

from __future__ import annotations

import pytest

from treadle.engine.states import TERMINAL_STEP, StepStatus, transition
from treadle.errors import IllegalTransitionError

S = StepStatus
EXPECTED: dict[StepStatus, set[StepStatus]] = {
    S.PENDING: {S.RUNNING, S.SKIPPED, S.CANCELLED},
    # RUNNING -> RUNNING: a new attempt after the previous one's lease expired.
    S.RUNNING: {S.RUNNING, S.COMPLETED, S.FAILED, S.RETRYING, S.CANCELLED},
    S.RETRYING: {S.RUNNING, S.CANCELLED},
}
ALL_PAIRS = [(current, target) for current in StepStatus for target in StepStatus]


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS)
def test_exactly_the_expected_transitions_succeed(current: StepStatus, target: StepStatus) -> None:
    if target in EXPECTED.get(current, set()):
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"from {current} to {target}"):
            transition(current, target)


def test_the_terminal_states_are_the_ones_with_no_way_out() -> None:
    assert set(TERMINAL_STEP) == {S.COMPLETED, S.FAILED, S.SKIPPED, S.CANCELLED}
    assert set(TERMINAL_STEP) == set(StepStatus) - set(EXPECTED)
