"""Applying the planner's verdict to a run's rows: skips, readiness, outcome, cancellation.

Every function here runs inside a transaction that holds the run row's lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta

from treadle.engine.dag import Dag
from treadle.engine.json import JSON, JSONObject
from treadle.engine.planner import StepState, plan, run_output
from treadle.engine.states import TERMINAL_STEP, EventType, RunStatus, StepStatus
from treadle.services.events import EventWriter
from treadle.services.rows import RunRow, StepRow


def step_states(steps: Mapping[str, StepRow]) -> dict[str, StepState]:
    return {node: StepState(StepStatus(row.status), row.output) for node, row in steps.items()}


def settle(
    run: RunRow,
    dag: Dag,
    steps: Mapping[str, StepRow],
    writer: EventWriter,
    now: datetime,
    grace: timedelta,
) -> list[uuid.UUID]:
    """Skip what can no longer run, finish the run when it is done; return steps to dispatch.

    A dispatched step is due again after ``grace``: if its message is lost, the reaper sends
    another (a duplicate delivery is harmless).
    """
    verdict = plan(dag, step_states(steps))
    for node_id in verdict.skipped:
        row = steps[node_id]
        row.status, row.finished_at, row.due_at = StepStatus.SKIPPED, now, None
        writer.append(EventType.STEP_SKIPPED, node_id)
    if verdict.outcome is RunStatus.FAILED:
        failed = next(row for row in steps.values() if row.status == StepStatus.FAILED)
        cause = failed.error if isinstance(failed.error, dict) else {}
        error: JSONObject = {**cause, "nodeId": failed.node_id}
        cancel_open_steps(steps, writer, now)
        finish_run(run, RunStatus.FAILED, writer, now, error=error)
        return []
    if verdict.outcome is RunStatus.COMPLETED:
        output = run_output(dag, step_states(steps))
        finish_run(run, RunStatus.COMPLETED, writer, now, output=output)
        return []
    ready = [steps[n] for n in verdict.ready if steps[n].due_at is None]
    for row in ready:
        row.due_at = now + grace
    return [row.id for row in ready]


def cancel_open_steps(steps: Mapping[str, StepRow], writer: EventWriter, now: datetime) -> None:
    """Every step not yet finished becomes CANCELLED; a late result of it is then discarded."""
    for row in steps.values():
        if StepStatus(row.status) not in TERMINAL_STEP:
            row.status, row.finished_at, row.due_at = StepStatus.CANCELLED, now, None
            writer.append(EventType.STEP_CANCELLED, row.node_id)


def finish_run(
    run: RunRow,
    status: RunStatus,
    writer: EventWriter,
    now: datetime,
    *,
    output: JSON = None,
    error: JSON = None,
) -> None:
    run.status, run.finished_at = status, now
    run.output, run.error = output, error
    event = {
        RunStatus.COMPLETED: EventType.RUN_COMPLETED,
        RunStatus.FAILED: EventType.RUN_FAILED,
        RunStatus.CANCELLED: EventType.RUN_CANCELLED,
    }[status]
    data: JSONObject = {}
    if output is not None:
        data["output"] = output
    if error is not None:
        data["error"] = error
    writer.append(event, None, data)


def template_context(run: RunRow, steps: Mapping[str, StepRow]) -> JSONObject:
    """What templates see: input, finished steps' outputs, run and workflow ids."""
    outputs: JSONObject = {
        node: {"output": row.output, "status": row.status} for node, row in steps.items()
    }
    return {
        "input": run.input,
        "steps": outputs,
        "run": {"id": str(run.id)},
        "workflow": {"id": str(run.workflow_id)},
    }
