"""plan(): ready, skipped and outcome, by example and over random workflows and runs."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from treadle.engine.dag import Dag, parse_definition
from treadle.engine.json import JSON
from treadle.engine.planner import Plan, StepState, edge_taken, plan, run_output
from treadle.engine.states import TERMINAL_STEP, RunStatus, StepStatus
from treadle.engine.steps import Sleep, StepContext, StepRegistry, condition

P, R, C, F, S, X = (
    StepStatus.PENDING,
    StepStatus.RUNNING,
    StepStatus.COMPLETED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.CANCELLED,
)


class _TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Task:
    name: ClassVar[str] = "TASK"
    config_model: ClassVar[type[BaseModel]] = _TaskConfig

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
        return None


REGISTRY: StepRegistry = {"TASK": _Task(), "CONDITION": condition.STEP}


def _node(node_id: str, is_condition: bool) -> dict[str, Any]:
    if is_condition:
        return {"id": node_id, "type": "CONDITION", "config": {"expression": "true"}}
    return {"id": node_id, "type": "TASK"}


def dag(*specs: str) -> Dag:
    """Build a DAG: ``"a>b"`` is an edge, ``"c?>d"`` / ``"c!>d"`` a CONDITION's true / false
    branch, ``"x"`` a lone node; nodes appear in the order they are first named."""
    names: list[str] = []
    conditions: set[str] = set()
    edges: list[dict[str, Any]] = []
    for spec in specs:
        for marker, when in (("?>", True), ("!>", False), (">", None)):
            if marker in spec:
                source, target = spec.split(marker)
                edge: dict[str, Any] = {"from": source, "to": target}
                if when is not None:
                    edge["when"] = when
                    conditions.add(source)
                edges.append(edge)
                ends = [source, target]
                break
        else:
            ends = [spec]
        names.extend(name for name in ends if name not in names)
    nodes = [_node(name, name in conditions) for name in names]
    return parse_definition({"nodes": nodes, "edges": edges}, REGISTRY)


def states(**given: StepStatus | tuple[StepStatus, JSON]) -> dict[str, StepState]:
    return {
        node: StepState(*value) if isinstance(value, tuple) else StepState(value)
        for node, value in given.items()
    }


def test_roots_start_in_parallel() -> None:
    graph = dag("a>c", "b>c", "x")
    assert plan(graph, states(a=P, b=P, c=P, x=P)) == Plan(("a", "b", "x"), (), None)


def test_a_child_waits_for_every_parent() -> None:
    graph = dag("a>c", "b>c")
    assert plan(graph, states(a=C, b=R, c=P)).ready == ()
    assert plan(graph, states(a=C, b=C, c=P)).ready == ("c",)


def test_fan_out_after_the_parent_completes() -> None:
    graph = dag("a>b", "a>c")
    assert plan(graph, states(a=P, b=P, c=P)).ready == ("a",)
    assert set(plan(graph, states(a=C, b=P, c=P)).ready) == {"b", "c"}


def test_a_condition_picks_one_branch_and_the_join_runs_once() -> None:
    graph = dag("c?>t", "c!>f", "t>j", "f>j")
    first = plan(graph, states(c=(C, {"result": True}), t=P, f=P, j=P))
    assert first == Plan(("t",), ("f",), None)
    assert plan(graph, states(c=(C, {"result": True}), t=R, f=S, j=P)) == Plan((), (), None)
    after = plan(graph, states(c=(C, {"result": True}), t=C, f=S, j=P))
    assert after == Plan(("j",), (), None)
    done = plan(graph, states(c=(C, {"result": True}), t=C, f=S, j=C))
    assert done == Plan((), (), RunStatus.COMPLETED)


def test_skips_propagate_within_one_call() -> None:
    graph = dag("c?>t", "t>u", "u>v", "c!>w")
    result = plan(graph, states(c=(C, {"result": False}), t=P, u=P, v=P, w=P))
    assert result.ready == ("w",)
    assert result.skipped == ("t", "u", "v")
    assert result.outcome is None


def test_the_last_skips_complete_the_run() -> None:
    graph = dag("c?>t", "t>u")
    result = plan(graph, states(c=(C, {"result": False}), t=P, u=P))
    assert result == Plan((), ("t", "u"), RunStatus.COMPLETED)


def test_a_failure_fails_the_run_at_once() -> None:
    graph = dag("a>b", "x>y")
    assert plan(graph, states(a=F, b=P, x=C, y=P)) == Plan((), (), RunStatus.FAILED)


def test_running_steps_are_not_ready_but_dispatched_pending_ones_are() -> None:
    graph = dag("a>b")
    assert plan(graph, states(a=R, b=P)).ready == ()
    assert plan(graph, states(a=P, b=P)).ready == ("a",)
    assert plan(graph, {}).ready == ("a",)  # a missing state counts as PENDING


@pytest.mark.parametrize("output", [None, {}, {"result": "yes"}, {"result": 1}, [True]])
def test_a_condition_without_a_boolean_result_takes_no_branch(output: JSON) -> None:
    graph = dag("c?>t", "c!>f")
    assert plan(graph, states(c=(C, output), t=P, f=P)).skipped == ("t", "f")


def test_a_cancelled_parent_takes_no_edge() -> None:
    graph = dag("a>b")
    assert plan(graph, states(a=X, b=P)) == Plan((), ("b",), RunStatus.COMPLETED)


def test_run_output_holds_completed_leaves() -> None:
    graph = dag("a>b", "a>c", "c>d")
    result = run_output(graph, states(a=(C, 1), b=(C, {"x": 2}), c=(C, 3), d=S))
    assert result == {"b": {"x": 2}}


@st.composite
def workflows(draw: st.DrawFn) -> Dag:
    count = draw(st.integers(min_value=1, max_value=9))
    is_condition = [draw(st.booleans()) for _ in range(count)]
    edges: list[dict[str, Any]] = []
    for target in range(count):
        for source in range(target):
            if draw(st.integers(0, 2)) == 0:
                edge: dict[str, Any] = {"from": f"n{source}", "to": f"n{target}"}
                if is_condition[source]:
                    edge["when"] = draw(st.booleans())
                edges.append(edge)
    # Definition order is not the topological order.
    order = draw(st.permutations(range(count)))
    nodes = [_node(f"n{index}", is_condition[index]) for index in order]
    return parse_definition({"nodes": nodes, "edges": edges}, REGISTRY)


def _check_plan(graph: Dag, current: dict[str, StepState], result: Plan) -> None:
    skipped_now = set(result.skipped)
    assert not skipped_now & set(result.ready)
    for node_id in (*result.ready, *result.skipped):
        assert current[node_id].status is P
        incoming = graph.parents[node_id]
        assert all(
            current[edge.source].status in TERMINAL_STEP or edge.source in skipped_now
            for edge in incoming
        ), f"{node_id} planned before all its parents finished"
        taken = any(edge_taken(edge, current[edge.source]) for edge in incoming)
        assert taken or not incoming if node_id in result.ready else not taken


@settings(max_examples=200, deadline=None)
@given(graph=workflows(), data=st.data())
def test_random_runs_end_consistently(graph: Dag, data: st.DataObject) -> None:
    current = {node_id: StepState(P) for node_id in graph.nodes}
    started: Counter[str] = Counter()
    result = plan(graph, current)
    for _ in range(3 * len(graph.nodes) + 3):
        _check_plan(graph, current, result)
        for node_id in result.skipped:
            current[node_id] = StepState(S)
        if result.outcome is not None:
            break
        for node_id in result.ready:
            current[node_id] = StepState(R)
            started[node_id] += 1
        running = sorted(node_id for node_id, state in current.items() if state.status is R)
        assert running, "the run is stuck: nothing ready, running or decided"
        finishing = data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True))
        for node_id in finishing:
            current[node_id] = _finish(graph, node_id, data)
        result = plan(graph, current)
    assert result.outcome is not None, "the run never ended"
    assert max(started.values(), default=0) <= 1, "a step started twice"
    failed = any(state.status is F for state in current.values())
    assert (result.outcome is RunStatus.FAILED) == failed
    if failed:  # the caller cancels what is left
        current = {n: s if s.status in TERMINAL_STEP else StepState(X) for n, s in current.items()}
    assert all(state.status in TERMINAL_STEP for state in current.values())
    if not failed:
        for node_id, state in current.items():
            incoming = graph.parents[node_id]
            taken = not incoming or any(edge_taken(e, current[e.source]) for e in incoming)
            assert (state.status is S) == (not taken), f"{node_id} is {state.status}"


def _finish(graph: Dag, node_id: str, data: st.DataObject) -> StepState:
    if data.draw(st.integers(0, 9)) == 0:
        return StepState(F)
    if graph.nodes[node_id].type == "CONDITION":
        return StepState(C, {"result": data.draw(st.booleans())})
    return StepState(C, {"node": node_id})
