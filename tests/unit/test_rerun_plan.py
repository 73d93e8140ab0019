"""rerun_start() and rerun_nodes(): where a rerun starts and which steps it resets."""

from __future__ import annotations

from tests.unit.test_planner import dag
from treadle.engine.planner import StepState, plan, rerun_nodes, rerun_start
from treadle.engine.states import StepStatus

C, F, X, S, P = (
    StepStatus.COMPLETED,
    StepStatus.FAILED,
    StepStatus.CANCELLED,
    StepStatus.SKIPPED,
    StepStatus.PENDING,
)


def states(**by_node: StepStatus) -> dict[str, StepState]:
    return {node: StepState(status) for node, status in by_node.items()}


def test_chain_reruns_the_failed_step_and_what_follows() -> None:
    chain = dag("a>b", "b>c")
    now = states(a=C, b=F, c=X)
    assert rerun_start(chain, now) == "b"
    assert rerun_nodes(chain, now, "b") == ("b", "c")
    assert rerun_nodes(chain, now, "a") == ("a", "b", "c")


def test_a_cancelled_sibling_branch_runs_again_but_a_completed_one_does_not() -> None:
    fan = dag("a>b", "a>c", "a>d", "b>j", "c>j", "d>j")
    now = states(a=C, b=F, c=X, d=C, j=X)
    assert rerun_nodes(fan, now, "b") == ("b", "c", "j")
    reset = {**now, **states(b=P, c=P, j=P)}
    assert set(plan(fan, reset).ready) == {"b", "c"}


def test_a_named_completed_node_reruns_with_its_descendants() -> None:
    chain = dag("a>b", "b>c", "x")
    now = states(a=C, b=C, c=F, x=C)
    assert rerun_nodes(chain, now, "b") == ("b", "c")


def test_cancelled_runs_start_at_the_first_cancelled_step() -> None:
    branchy = dag("a?>b", "a!>c", "b>d")
    assert rerun_start(branchy, states(a=C, b=X, c=S, d=X)) == "b"
    assert rerun_start(branchy, states(a=C, b=C, c=S, d=C)) == "c"
    assert rerun_start(dag("a>b"), states(a=C, b=C)) is None
