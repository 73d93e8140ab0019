"""Recording an attempt's outcome on its step row, inside the run's locked transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from treadle.engine.dag import RetryPolicy
from treadle.engine.executor import Failed, Outcome, Succeeded, Waiting, unstorable_output
from treadle.engine.json import JSONObject, storable_text, unstorable
from treadle.engine.retry import backoff_seconds, can_retry
from treadle.engine.states import EventType, StepStatus, transition
from treadle.redact import scrub_text
from treadle.services.progress import settle
from treadle.services.rows import StepRow
from treadle.services.runtxn import RunTxn, dag_key

if TYPE_CHECKING:
    from treadle.resources import Resources


def apply_outcome(
    resources: Resources, txn: RunTxn, step: StepRow, outcome: Outcome, now: datetime
) -> None:
    """Move the RUNNING ``step`` on by ``outcome``, then let the planner settle the run."""
    dag = resources.dags.get(dag_key(txn.run), txn.run.definition)
    if isinstance(outcome, Waiting):
        # A sleeping DELAY keeps its attempt but no lease: it holds no worker slot.
        step.wake_at = step.due_at = outcome.until
        step.lease_until = None
        txn.timers.append((step.id, outcome.until))
        if outcome.waiting is not None:
            data: JSONObject = {"attempt": step.attempt, **outcome.waiting}
            txn.writer.append(EventType.STEP_WAITING, step.node_id, data)
        return
    if isinstance(outcome, Succeeded):
        outcome = _storable(outcome)
    if isinstance(outcome, Succeeded):
        step.status = transition(StepStatus.RUNNING, StepStatus.COMPLETED)
        step.output, step.finished_at = outcome.output, now
        step.due_at = step.lease_until = step.wake_at = None
        txn.writer.append(
            EventType.STEP_COMPLETED,
            step.node_id,
            {"attempt": step.attempt, "output": outcome.output},
        )
    else:
        _on_failure(txn, step, outcome, dag.nodes[step.node_id].retry, now)
    txn.dispatch.extend(settle(txn.run, dag, txn.steps, txn.writer, now, resources.dispatch_grace))


def _storable(outcome: Succeeded) -> Succeeded | Failed:
    """Output the database cannot store fails the step once; it would fail every recording."""
    problem = unstorable(outcome.output)
    return outcome if problem is None else unstorable_output(problem)


def _on_failure(
    txn: RunTxn, step: StepRow, failed: Failed, policy: RetryPolicy, now: datetime
) -> None:
    message = storable_text(scrub_text(failed.error))  # errors may quote template text
    error: JSONObject = {"code": failed.code, "message": message}
    tries = step.attempt - step.attempt_base  # this run attempt's tries (see services.rerun)
    if failed.retryable and can_retry(policy, tries):
        wake = now + timedelta(seconds=backoff_seconds(policy, tries))
        step.status = transition(StepStatus.RUNNING, StepStatus.RETRYING)
        step.error, step.wake_at, step.due_at, step.lease_until = error, wake, wake, None
        txn.writer.append(
            EventType.STEP_RETRYING,
            step.node_id,
            {"attempt": step.attempt, "error": error, "retryAt": wake.isoformat()},
        )
        txn.timers.append((step.id, wake))
        return
    fail_step(txn, step, error, now)


def fail_step(txn: RunTxn, step: StepRow, error: JSONObject, now: datetime) -> None:
    step.status = transition(StepStatus(step.status), StepStatus.FAILED)
    step.error, step.finished_at = error, now
    step.due_at = step.lease_until = step.wake_at = None
    txn.writer.append(
        EventType.STEP_FAILED, step.node_id, {"attempt": step.attempt, "error": error}
    )
