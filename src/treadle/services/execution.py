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
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from treadle.engine.executor import Failed, Outcome, Succeeded, Waiting, execute_step
from treadle.engine.json import JSONObject
from treadle.engine.retry import backoff_seconds, can_retry
from treadle.engine.states import TERMINAL_RUN, EventType, RunStatus, StepStatus, transition
from treadle.engine.steps import StepContext
from treadle.logging import run_id_var, step_key_var, tenant_id_var
from treadle.models import WorkflowStep
from treadle.models.base import utcnow
from treadle.pubsub import run_channel
from treadle.redact import scrub_text
from treadle.services.progress import settle, template_context
from treadle.services.runtxn import RunTxn, open_run_txn
from treadle.tenancy import SYSTEM, transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)

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
    context: JSONObject


async def advance_step(resources: Resources, step_id: uuid.UUID) -> None:
    """Handle one delivery of ``treadle.run_step``; safe to call any number of times."""
    async with transaction(resources, SYSTEM) as session:
        owner = (
            await session.execute(
                select(WorkflowStep.run_id, WorkflowStep.tenant_id).where(
                    WorkflowStep.id == step_id
                )
            )
        ).one_or_none()
    if owner is None:
        return
    claim = await _claim(resources, owner.tenant_id, owner.run_id, step_id)
    if claim is None:
        return
    tenant_id_var.set(str(claim.tenant_id))
    run_id_var.set(str(claim.run_id))
    step_key_var.set(f"{claim.run_id}:{claim.node_id}:{claim.attempt}")
    outcome = await _execute(resources, claim)
    if outcome is not None:
        await _record(resources, claim, outcome)


async def _claim(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, step_id: uuid.UUID
) -> Claim | None:
    now = utcnow()
    async with open_run_txn(resources, tenant_id, run_id) as txn:
        if RunStatus(txn.run.status) in TERMINAL_RUN:
            return None
        step = next((row for row in txn.steps.values() if row.id == step_id), None)
        if step is None:
            return None
        status = StepStatus(step.status)
        resumed: datetime | None = None
        if status is StepStatus.RUNNING and step.wake_at is not None:
            if step.wake_at > now:
                return None  # a sleeping delay, delivered early
            resumed = step.wake_at
            step.lease_until = now + _lease(resources)
        elif not _startable(step, status, now):
            return None
        elif status is StepStatus.RUNNING:
            if not _reclaim(resources, txn, step, now):
                return None
        else:
            _start_attempt(resources, txn, step, now)
        step.due_at = step.lease_until
        return Claim(
            step_id=step.id,
            run_id=txn.run.id,
            tenant_id=txn.run.tenant_id,
            node_id=step.node_id,
            attempt=step.attempt,
            resumed_until=resumed,
            definition=txn.run.definition,
            context=template_context(txn.run, txn.steps),
        )


def _lease(resources: Resources) -> timedelta:
    return timedelta(seconds=resources.settings.treadle_lease_seconds)


def _startable(step: WorkflowStep, status: StepStatus, now: datetime) -> bool:
    if status is StepStatus.PENDING:
        return step.due_at is not None  # dispatched by the planner
    if status is StepStatus.RETRYING:
        return step.wake_at is None or step.wake_at <= now
    if status is StepStatus.RUNNING:
        return step.lease_until is not None and step.lease_until <= now
    return False


def _reclaim(resources: Resources, txn: RunTxn, step: WorkflowStep, now: datetime) -> bool:
    """The attempt's lease ran out: its worker died. Retry it, or fail the step if spent."""
    dag = resources.dags.get(txn.run.id, txn.run.definition)
    policy = dag.nodes[step.node_id].retry
    if can_retry(policy, step.attempt):
        txn.writer.append(
            EventType.STEP_RETRYING,
            step.node_id,
            {"attempt": step.attempt, "error": WORKER_LOST, "retryAt": now.isoformat()},
        )
        _start_attempt(resources, txn, step, now)
        return True
    _fail(txn, step, WORKER_LOST, now)
    txn.dispatch = settle(txn.run, dag, txn.steps, txn.writer, now)
    return False


def _start_attempt(resources: Resources, txn: RunTxn, step: WorkflowStep, now: datetime) -> None:
    step.status = transition(StepStatus(step.status), StepStatus.RUNNING)
    step.attempt += 1
    step.started_at = step.started_at or now
    step.wake_at, step.error = None, None
    step.lease_until = now + _lease(resources)
    if txn.run.status == RunStatus.PENDING:
        txn.run.status, txn.run.started_at = RunStatus.RUNNING, now
        txn.writer.append(EventType.RUN_STARTED)
    txn.writer.append(EventType.STEP_STARTED, step.node_id, {"attempt": step.attempt})


async def _execute(resources: Resources, claim: Claim) -> Outcome | None:
    """Run the attempt with a heartbeat; None when the attempt lost its fence meanwhile."""
    dag = resources.dags.get(claim.run_id, claim.definition)
    node = dag.nodes[claim.node_id]
    ctx = StepContext(
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
    )
    work = asyncio.ensure_future(
        execute_step(
            resources.registry[node.type],
            dag.configs[claim.node_id],
            ctx,
            timeout_seconds=node.timeout_seconds,
        )
    )
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


async def _record(resources: Resources, claim: Claim, outcome: Outcome) -> None:
    now = utcnow()
    async with open_run_txn(resources, claim.tenant_id, claim.run_id) as txn:
        step = txn.steps[claim.node_id]
        if (
            RunStatus(txn.run.status) in TERMINAL_RUN
            or step.status != StepStatus.RUNNING
            or step.attempt != claim.attempt
        ):
            logger.info("late result of %s attempt %d discarded", claim.node_id, claim.attempt)
            return
        dag = resources.dags.get(txn.run.id, txn.run.definition)
        if isinstance(outcome, Waiting):
            step.wake_at = step.due_at = outcome.until
            step.lease_until = None
            txn.timers.append((step.id, outcome.until))
            return
        if isinstance(outcome, Succeeded):
            step.status = transition(StepStatus.RUNNING, StepStatus.COMPLETED)
            step.output, step.finished_at = outcome.output, now
            step.due_at = step.lease_until = None
            txn.writer.append(
                EventType.STEP_COMPLETED,
                step.node_id,
                {"attempt": step.attempt, "output": outcome.output},
            )
        else:
            _on_failure(txn, step, outcome, dag.nodes[step.node_id].retry, now)
        txn.dispatch = settle(txn.run, dag, txn.steps, txn.writer, now)


def _on_failure(txn: RunTxn, step: WorkflowStep, failed: Failed, policy, now: datetime) -> None:  # type: ignore[no-untyped-def]
    error: JSONObject = {"code": failed.code, "message": scrub_text(failed.error)}
    if failed.retryable and can_retry(policy, step.attempt):
        wake = now + timedelta(seconds=backoff_seconds(policy, step.attempt))
        step.status = transition(StepStatus.RUNNING, StepStatus.RETRYING)
        step.error, step.wake_at, step.due_at, step.lease_until = error, wake, wake, None
        txn.writer.append(
            EventType.STEP_RETRYING,
            step.node_id,
            {"attempt": step.attempt, "error": error, "retryAt": wake.isoformat()},
        )
        txn.timers.append((step.id, wake))
        return
    _fail(txn, step, error, now)


def _fail(txn: RunTxn, step: WorkflowStep, error: JSONObject, now: datetime) -> None:
    step.status = transition(StepStatus(step.status), StepStatus.FAILED)
    step.error, step.finished_at = error, now
    step.due_at = step.lease_until = step.wake_at = None
    txn.writer.append(
        EventType.STEP_FAILED, step.node_id, {"attempt": step.attempt, "error": error}
    )
