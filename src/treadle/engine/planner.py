"""The pure scheduler: which steps may start, which are skipped, and how the run ends.

Invariants:
- ``plan`` reads states and never changes them; calling it twice on the same states gives the
  same plan, so a worker that crashed between planning and recording can simply plan again.
- A node is ready only once every parent is terminal and at least one incoming edge is taken;
  it is skipped once every parent is terminal and none is. Skips propagate within one call.
- ``plan`` never decides CANCELLED; that is the caller's (a cancel request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from treadle.engine.dag import Dag, EdgeSpec
from treadle.engine.json import JSON, JSONObject
from treadle.engine.states import TERMINAL_STEP, RunStatus, StepStatus


@dataclass(frozen=True, slots=True)
class StepState:
    """What the planner needs to know about one step."""

    status: StepStatus
    output: JSON = None


@dataclass(frozen=True, slots=True)
class Plan:
    """``ready``: PENDING steps to start; ``skipped``: PENDING steps to mark SKIPPED now;
    ``outcome``: the run's final status once decided, else None."""

    ready: tuple[str, ...]
    skipped: tuple[str, ...]
    outcome: RunStatus | None


_PENDING = StepState(StepStatus.PENDING)


def plan(dag: Dag, states: Mapping[str, StepState]) -> Plan:
    """Decide what happens next in a run.

    A FAILED step fails the run at once (``outcome`` FAILED, nothing ready or skipped: the
    caller cancels what is left). Otherwise the run is COMPLETED when every step is terminal,
    counting the skips of this call. ``ready`` may list steps the caller already dispatched but
    not yet moved out of PENDING; dispatching is idempotent.

    Args:
        dag: The run's workflow definition.
        states: Each node's current state; a node missing here counts as PENDING.
    """
    if any(state.status is StepStatus.FAILED for state in states.values()):
        return Plan(ready=(), skipped=(), outcome=RunStatus.FAILED)
    effective: dict[str, StepStatus] = {}
    ready: list[str] = []
    skipped: list[str] = []
    for node_id in dag.order:  # parents come first, so this call's skips reach their children
        status = states.get(node_id, _PENDING).status
        if status is StepStatus.PENDING:
            decision = _decide(dag.parents[node_id], states, effective)
            if decision is True:
                ready.append(node_id)
            elif decision is False:
                skipped.append(node_id)
                status = StepStatus.SKIPPED
        effective[node_id] = status
    finished = all(status in TERMINAL_STEP for status in effective.values())
    return Plan(tuple(ready), tuple(skipped), RunStatus.COMPLETED if finished else None)


def run_output(dag: Dag, states: Mapping[str, StepState]) -> JSONObject:
    """The run's output: ``{nodeId: output}`` of each COMPLETED node that has no children."""
    return {
        node_id: states[node_id].output
        for node_id in dag.nodes
        if not dag.children[node_id]
        and node_id in states
        and states[node_id].status is StepStatus.COMPLETED
    }


def edge_taken(edge: EdgeSpec, parent: StepState) -> bool:
    """Whether ``edge`` is followed: its parent COMPLETED and, for a branch, chose this side."""
    if parent.status is not StepStatus.COMPLETED:
        return False
    if edge.when is None:
        return True
    result = parent.output.get("result") if isinstance(parent.output, dict) else None
    return isinstance(result, bool) and result is edge.when


def _decide(
    incoming: tuple[EdgeSpec, ...],
    states: Mapping[str, StepState],
    effective: Mapping[str, StepStatus],
) -> bool | None:
    """True: run it; False: skip it; None: a parent is still unfinished."""
    if not incoming:
        return True
    if any(effective[edge.source] not in TERMINAL_STEP for edge in incoming):
        return None
    # A parent skipped in this very call is not in ``states`` as SKIPPED yet, but its edge is not
    # taken either way, since only a COMPLETED parent takes an edge.
    return any(edge_taken(edge, states.get(edge.source, _PENDING)) for edge in incoming)


def rerun_start(dag: Dag, states: Mapping[str, StepState]) -> str | None:
    """Where a rerun starts by default: the first FAILED node in topological order, else the
    first CANCELLED one, else the first that did not complete; None when every node did."""
    for wanted in (StepStatus.FAILED, StepStatus.CANCELLED):
        for node_id in dag.order:
            if states.get(node_id, _PENDING).status is wanted:
                return node_id
    return next(
        (n for n in dag.order if states.get(n, _PENDING).status is not StepStatus.COMPLETED),
        None,
    )


def rerun_nodes(dag: Dag, states: Mapping[str, StepState], start: str) -> tuple[str, ...]:
    """The nodes a rerun from ``start`` resets, in topological order.

    ``start`` and everything downstream of it run again, even if they had completed; so does
    every node that did not complete (a branch cancelled by the failure, a skip to re-decide).
    Completed nodes elsewhere keep their outputs.
    """
    downstream = {start}
    for node_id in dag.order:  # parents first, so one pass reaches every descendant
        if any(edge.source in downstream for edge in dag.parents[node_id]):
            downstream.add(node_id)
    return tuple(
        node_id
        for node_id in dag.order
        if node_id in downstream or states.get(node_id, _PENDING).status is not StepStatus.COMPLETED
    )
