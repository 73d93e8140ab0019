"""Advancing one step: claim under the run's lock, execute without a transaction, record fenced.

Invariants:
- A step attempt is ``runId:nodeId:attempt``. Only the holder of the current attempt of a RUNNING
  step may record its result (the fence), so a redelivered message, a worker that lost its lease
  or a cancelled run cannot change anything twice.
- No transaction is held while a step runs; a heartbeat extends the attempt's lease instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from treadle.engine.dagcache import DagKey
from treadle.engine.executor import Outcome, execute_step
from treadle.engine.json import JSONObject
from treadle.engine.retry import can_retry
from treadle.engine.states import TERMINAL_RUN, EventType, RunStatus, StepStatus, transition
from treadle.engine.steps import StepContext
from treadle.engine.template import Allowance, HandOff
from treadle.logging import run_id_var, step_key_var, tenant_id_var
from treadle.models import WorkflowStep
from treadle.models.base import utcnow
from treadle.pubsub import run_channel
from treadle.queue import StepRef
from treadle.services.outcome import apply_outcome, fail_step
from treadle.services.progress import settle, template_context
from treadle.services.rows import StepRow
from treadle.services.runtxn import RunTxn, dag_key, open_run_txn
from treadle.tenancy import SYSTEM, transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)

# How much pure work one claiming transaction may do before handing the rest to the queue.
INLINE_STEPS = 200
INLINE_SECONDS = 0.05
# How many steps one delivery may run back to back: a recording that makes a step ready claims
# it in the same transaction and runs it here, instead of a queue hop and a claim of its own.
CONTINUE_STEPS = 20

WORKER_LOST: JSONObject = {
    "code": "WORKER_LOST",
    "message": "the worker running this step stopped responding",
}


@dataclass(frozen=True, slots=True)
class Claim:
    step_id: uuid.UUID
    run_id: uuid.UUID
    tenant_id: uuid.UUID
    node_id: str
    attempt: int
    resumed_until: datetime | None
    definition: JSONObject
    dag_key: DagKey
    context: JSONObject


async def advance_step(
    resources: Resources, step_id: uuid.UUID, *, ref: StepRef | None = None
) -> None:
    """Handle one delivery of ``treadle.run_step``; safe to call any number of times.

    Pure, quick step types (``inline``) run inside the claiming transaction, so they cost one
    transaction; the others are claimed, run without a transaction, then recorded. Recording
    claims one step it made ready (``CONTINUE_STEPS`` per delivery), which then runs here.
    """
    if ref is None:
        ref = await _lookup(resources, step_id)
        if ref is None:
            return
    claim = await _claim(resources, ref)
    for left in range(CONTINUE_STEPS, 0, -1):
        if claim is None:
            return
        tenant_id_var.set(str(claim.tenant_id))
        run_id_var.set(str(claim.run_id))
        step_key_var.set(f"{claim.run_id}:{claim.node_id}:{claim.attempt}")
        outcome = await _execute(resources, claim)
        if outcome is None:
            return
        claim = await _record(resources, claim, outcome, next_step=left > 1)


async def _lookup(resources: Resources, step_id: uuid.UUID) -> StepRef | None:
    async with transaction(resources, SYSTEM) as session:
        row = (
            await session.execute(
                select(WorkflowStep.run_id, WorkflowStep.tenant_id).where(
                    WorkflowStep.id == step_id
                )
            )
        ).one_or_none()
    return None if row is None else StepRef(step_id, row.run_id, row.tenant_id)


async def _claim(resources: Resources, ref: StepRef) -> Claim | None:
    now = utcnow()
    async with open_run_txn(resources, ref.tenant_id, ref.run_id) as txn:
        if RunStatus(txn.run.status) in TERMINAL_RUN:
            return None
        step = next((row for row in txn.steps.values() if row.id == ref.step_id), None)
        lag = None if step is None else _queue_lag(resources, step, now)
        if step is None or not _take(resources, txn, step, now):
            return None
        if lag is not None:
            resources.metrics.observe_lag(step.type, lag)
        step.due_at = step.lease_until
        if not _inline(resources, step):
            return _claim_of(txn, step)
        return await _run_inline(resources, txn, step)


def _claim_of(txn: RunTxn, step: StepRow) -> Claim:
    return Claim(
        step_id=step.id,
        run_id=txn.run.id,
        tenant_id=txn.run.tenant_id,
        node_id=step.node_id,
        attempt=step.attempt,
        resumed_until=step.wake_at if step.status == StepStatus.RUNNING else None,
        definition=txn.run.definition,
        dag_key=dag_key(txn.run),
        context=template_context(txn.run, txn.steps),
    )


def _queue_lag(resources: Resources, step: StepRow, now: datetime) -> float | None:
    """Seconds since the step became ready (PENDING) or its retry came due (RETRYING).

    A dispatched step is due ``dispatch_grace`` after it became ready; when the reaper had to
    send it again, that due time moved on, so the lag then counts from the last dispatch.
    """
    if step.status == StepStatus.PENDING and step.due_at is not None:
        return (now - (step.due_at - resources.dispatch_grace)).total_seconds()
    if step.status == StepStatus.RETRYING and step.wake_at is not None:
        return (now - step.wake_at).total_seconds()
    return None


def _inline(resources: Resources, step: StepRow) -> bool:
    return bool(getattr(resources.registry[step.type], "inline", False))


async def _run_inline(resources: Resources, txn: RunTxn, first: StepRow) -> Claim | None:
    """Run ``first`` and then, within a budget, the pure steps it makes ready, in this txn.

    A chain or fan-out of TRANSFORM/CONDITION steps then costs one transaction and no queue
    hops; every step still gets its own state change and events. Whatever is ready but not
    pure, or beyond the budget, goes to the queue as usual. A step whose templates need more
    than a slice of the loop is returned as a claim, to run outside the transaction.
    """
    step, done, queued = first, 0, list[StepRow]()
    deadline = time.monotonic() + INLINE_SECONDS
    while True:
        claim = _claim_of(txn, step)
        try:
            outcome = await _run(resources, claim, _context(resources, claim, inline=True))
        except HandOff:
            step.due_at = step.lease_until  # claimed like any other step from here on
            return claim
        apply_outcome(resources, txn, step, outcome, utcnow())
        done += 1
        if done >= INLINE_STEPS or time.monotonic() > deadline:
            return None  # what is still in txn.dispatch goes to the queue
        if RunStatus(txn.run.status) in TERMINAL_RUN:
            return None
        if not queued:
            by_id = {row.id: row for row in txn.steps.values()}
            queued = [by_id[i] for i in txn.dispatch if _inline(resources, by_id[i])]
        queued = [row for row in queued if row.status == StepStatus.PENDING]
        if not queued:
            return None
        step = queued.pop()
        txn.dispatch.remove(step.id)
        _start_attempt(resources, txn, step, utcnow())


def _take(resources: Resources, txn: RunTxn, step: StepRow, now: datetime) -> bool:
    """Decide under the lock whether this delivery may run the step, and start the attempt."""
    status = StepStatus(step.status)
    if status is StepStatus.RUNNING and step.wake_at is not None:
        if step.wake_at > now:
            return False  # a sleeping delay, delivered early
        step.lease_until = now + _lease(resources)  # resuming the same attempt
        return True
    if not _startable(step, status, now):
        return False
    if status is StepStatus.RUNNING:
        return _reclaim(resources, txn, step, now)
    _start_attempt(resources, txn, step, now)
    return True


def _lease(resources: Resources) -> timedelta:
    return timedelta(seconds=resources.settings.treadle_lease_seconds)


def _startable(step: StepRow, status: StepStatus, now: datetime) -> bool:
    if status is StepStatus.PENDING:
        return step.due_at is not None  # dispatched by the planner
    if status is StepStatus.RETRYING:
        return step.wake_at is None or step.wake_at <= now
    if status is StepStatus.RUNNING:
        return step.lease_until is not None and step.lease_until <= now
    return False


def _reclaim(resources: Resources, txn: RunTxn, step: StepRow, now: datetime) -> bool:
    """The attempt's lease ran out: its worker died. Retry it, or fail the step if spent."""
    dag = resources.dags.get(dag_key(txn.run), txn.run.definition)
    policy = dag.nodes[step.node_id].retry
    if can_retry(policy, step.attempt - step.attempt_base):
        txn.writer.append(
            EventType.STEP_RETRYING,
            step.node_id,
            {"attempt": step.attempt, "error": WORKER_LOST, "retryAt": now.isoformat()},
        )
        _start_attempt(resources, txn, step, now)
        return True
    fail_step(txn, step, WORKER_LOST, now)
    txn.dispatch.extend(settle(txn.run, dag, txn.steps, txn.writer, now, resources.dispatch_grace))
    return False


def _start_attempt(resources: Resources, txn: RunTxn, step: StepRow, now: datetime) -> None:
    step.status = transition(StepStatus(step.status), StepStatus.RUNNING)
    step.attempt += 1
    step.started_at = step.started_at or now
    step.wake_at, step.error = None, None
    step.lease_until = now + _lease(resources)
    if txn.run.status == RunStatus.PENDING:
        txn.run.status, txn.run.started_at = RunStatus.RUNNING, now
        txn.writer.append(EventType.RUN_STARTED)
    txn.writer.append(EventType.STEP_STARTED, step.node_id, {"attempt": step.attempt})


def _context(resources: Resources, claim: Claim, *, inline: bool = False) -> StepContext:
    return StepContext(
        run_id=str(claim.run_id),
        workflow_id=str(claim.context["workflow"]["id"]),  # type: ignore[index,call-overload]
        node_id=claim.node_id,
        attempt=claim.attempt,
        now=utcnow(),
        http=resources.http,
        model=resources.model,
        default_model=resources.settings.treadle_ai_model,
        logger=logger,
        templates=resources.templates,
        template_context=claim.context,
        emit_delta=_delta_sink(resources, claim),
        resumed_until=claim.resumed_until,
        allowance=Allowance(inline=inline),
    )


async def _run(resources: Resources, claim: Claim, ctx: StepContext) -> Outcome:
    dag = resources.dags.get(claim.dag_key, claim.definition)
    node = dag.nodes[claim.node_id]
    started = time.monotonic()
    outcome = await execute_step(
        resources.registry[node.type],
        dag.configs[claim.node_id],
        ctx,
        timeout_seconds=node.timeout_seconds,
    )
    resources.metrics.observe_attempt(
        node.type, type(outcome).__name__.lower(), time.monotonic() - started
    )
    return outcome


async def _execute(resources: Resources, claim: Claim) -> Outcome | None:
    """Run the attempt with a heartbeat; None when the attempt lost its fence meanwhile."""
    work = asyncio.ensure_future(_run(resources, claim, _context(resources, claim)))
    beat = asyncio.create_task(_heartbeat(resources, claim, work))
    try:
        return await work
    except asyncio.CancelledError:
        if beat.done() and not beat.cancelled() and beat.result():
            logger.info("step %s lost its lease; result dropped", claim.node_id)
            return None
        raise
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat


async def _heartbeat(resources: Resources, claim: Claim, work: asyncio.Future[Outcome]) -> bool:
    """Extend the lease every third of it; cancel ``work`` (return True) once the fence is lost."""
    lease = _lease(resources)
    while True:
        await asyncio.sleep(lease.total_seconds() / 3)
        until = utcnow() + lease
        async with transaction(resources, claim.tenant_id) as session:
            result = await session.execute(
                update(WorkflowStep)
                .where(
                    WorkflowStep.id == claim.step_id,
                    WorkflowStep.status == StepStatus.RUNNING,
                    WorkflowStep.attempt == claim.attempt,
                )
                .values(lease_until=until, due_at=until)
            )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            work.cancel()
            return True


def _delta_sink(resources: Resources, claim: Claim):  # type: ignore[no-untyped-def]
    channel = run_channel(claim.tenant_id, claim.run_id)

    async def emit(delta: str) -> None:
        message = {
            "type": "STEP_OUTPUT_DELTA",
            "runId": str(claim.run_id),
            "nodeId": claim.node_id,
            "data": {"delta": delta},
        }
        with contextlib.suppress(Exception):
            await resources.bus.publish(channel, message)

    return emit


async def _record(
    resources: Resources, claim: Claim, outcome: Outcome, *, next_step: bool = False
) -> Claim | None:
    """Record the attempt's outcome (fenced); with ``next_step``, claim a step it made ready."""
    async with open_run_txn(resources, claim.tenant_id, claim.run_id) as txn:
        step = txn.steps[claim.node_id]
        if (
            RunStatus(txn.run.status) in TERMINAL_RUN
            or step.status != StepStatus.RUNNING
            or step.attempt != claim.attempt
        ):
            logger.info("late result of %s attempt %d discarded", claim.node_id, claim.attempt)
            return None
        apply_outcome(resources, txn, step, outcome, utcnow())
        if not next_step or not txn.dispatch or RunStatus(txn.run.status) in TERMINAL_RUN:
            return None
        return await _continue(resources, txn)


async def _continue(resources: Resources, txn: RunTxn) -> Claim | None:
    """Claim the first step this transaction made ready, as a delivery of it would; the others
    go to the queue. A pure one runs here and now (with what it makes ready)."""
    by_id = {row.id: row for row in txn.steps.values()}
    step = by_id[txn.dispatch.pop(0)]
    now = utcnow()
    _start_attempt(resources, txn, step, now)
    step.due_at = step.lease_until
    if not _inline(resources, step):
        return _claim_of(txn, step)
    return await _run_inline(resources, txn, step)
