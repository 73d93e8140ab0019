"""Rerun: a new attempt of a FAILED or CANCELLED run, from one node onward, in place.

Chosen: the rerun *is the same run* (same id), resumed in place. Its history keeps both
attempts: the events continue the same gap-free ``seq`` after the first attempt's terminal
event, starting with ``RUN_RESUMED``; the run goes back to RUNNING and ends with a new terminal
event. Steps that completed outside the rerun's reach keep their outputs and are not run again.

Invariants:
- Only a FAILED or CANCELLED run can be re-run (409 otherwise), checked under the run's lock.
- A reset step keeps its ``attempt`` count, so the next try is ``attempt + 1`` and outbound
  ``Idempotency-Key: runId:nodeId:attempt`` values are never reused; ``attempt_base`` makes the
  retry policy count afresh.
- The idempotency key is stored in the ``RUN_RESUMED`` event it caused: the same key on the same
  run within 24 h returns the run without starting another attempt.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy import select

from treadle.engine.json import JSON, JSONObject
from treadle.engine.planner import rerun_nodes, rerun_start
from treadle.engine.states import EventType, RunStatus, StepStatus
from treadle.errors import ConflictError, ValidationError
from treadle.models import WorkflowEvent
from treadle.models.base import utcnow
from treadle.services.context import ServiceContext
from treadle.services.progress import settle, step_states
from treadle.services.rows import StepRow
from treadle.services.runs import (
    IDEMPOTENCY_WINDOW,
    Execution,
    defer_effects,
    require_run,
    run_view,
)
from treadle.services.runtxn import RunTxn, dag_key, load_run_txn
from treadle.services.views import parse_input

RERUNNABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


class RerunInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_node_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    input: JsonValue = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None


async def rerun_run(
    ctx: ServiceContext,
    run_id: str,
    from_node_id: str | None = None,
    input_: JSON = None,
    idempotency_key: str | None = None,
) -> Execution:
    """Start a new attempt of a FAILED or CANCELLED run from ``from_node_id`` (default: the
    first failed node) and everything downstream, optionally with a new input.

    Raises:
        NotFoundError: no such run for the caller's tenant.
        ConflictError: the run is not FAILED or CANCELLED, or nothing is left to run.
        ValidationError: ``from_node_id`` names no node of the run, or input is not an object.
    """
    actor = ctx.require_actor()
    args = _parse(from_node_id, input_, idempotency_key)
    limiter = ctx.resources.limiter
    await limiter.hit(limiter.limits.execute_per_tenant, "execute", str(actor.tenant_id))
    found = await require_run(ctx, run_id)  # another tenant's run: NOT_FOUND
    txn = await load_run_txn(ctx.session, ctx.resources, found.id)
    attempts = await _resumptions(ctx, txn.run.id)
    if args.idempotency_key and _seen(attempts, args.idempotency_key):
        return Execution(run=run_view(txn.run, txn.steps), created=False)
    if RunStatus(txn.run.status) not in RERUNNABLE:
        raise ConflictError(f"only a FAILED or CANCELLED run can be re-run, not {txn.run.status}")
    _resume(ctx, txn, args, attempt=len(attempts) + 2)
    await txn.save()
    defer_effects(ctx, txn)
    return Execution(run=run_view(txn.run, txn.steps), created=True)


def _parse(from_node_id: str | None, input_: JSON, key: str | None) -> RerunInput:
    args = parse_input(
        RerunInput, {"from_node_id": from_node_id, "input": input_, "idempotency_key": key}
    )
    if args.input is not None and not isinstance(args.input, dict):
        raise ValidationError("input must be a JSON object", fields={"input": "must be an object"})
    return args


def _resume(ctx: ServiceContext, txn: RunTxn, args: RerunInput, *, attempt: int) -> None:
    """Reset the steps in reach, reopen the run, record RUN_RESUMED and plan what starts."""
    run, now = txn.run, utcnow()
    dag = ctx.resources.dags.get(dag_key(run), run.definition)
    states = step_states(txn.steps)
    start = args.from_node_id or rerun_start(dag, states)
    if start is None:
        raise ConflictError("every step of this run completed; there is nothing to re-run")
    if start not in dag.nodes:
        raise ValidationError(
            f"the run has no node {start!r}", fields={"fromNodeId": "no such node"}
        )
    nodes = rerun_nodes(dag, states, start)
    for node_id in nodes:
        _reset(txn.steps[node_id])
    if args.input is not None:
        run.input = args.input
    run.status, run.finished_at, run.output, run.error = RunStatus.RUNNING, None, None, None
    data: JSONObject = {
        "attempt": attempt,
        "fromNodeId": start,
        "nodes": list(nodes),
        "inputChanged": args.input is not None,
    }
    if args.idempotency_key:
        data["idempotencyKey"] = args.idempotency_key
    txn.writer.append(EventType.RUN_RESUMED, None, data)
    txn.dispatch = settle(run, dag, txn.steps, txn.writer, now, ctx.resources.dispatch_grace)


def _reset(step: StepRow) -> None:
    """Back to PENDING for the new run attempt (a deliberate reset, outside the state machine)."""
    step.status = StepStatus.PENDING
    step.output = step.error = None
    step.due_at = step.wake_at = step.lease_until = None
    step.started_at = step.finished_at = None
    step.attempt_base = step.attempt


async def _resumptions(ctx: ServiceContext, run_id: uuid.UUID) -> list[WorkflowEvent]:
    rows = await ctx.session.execute(
        select(WorkflowEvent)
        .where(WorkflowEvent.run_id == run_id, WorkflowEvent.type == EventType.RUN_RESUMED.value)
        .order_by(WorkflowEvent.seq)
    )
    return list(rows.scalars())


def _seen(resumptions: list[WorkflowEvent], key: str) -> bool:
    since = utcnow() - IDEMPOTENCY_WINDOW
    return any(
        isinstance(event.data, dict)
        and event.data.get("idempotencyKey") == key
        and event.created_at >= since
        for event in resumptions
    )
