"""The reaper's pass: find steps whose ``due_at`` has come, push it back, enqueue them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from treadle.engine.states import StepStatus
from treadle.models import WorkflowStep
from treadle.models.base import utcnow
from treadle.queue import StepRef
from treadle.tenancy import SYSTEM, transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

BATCH = 500
OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.RETRYING)


async def dispatch_due(resources: Resources) -> int:
    """Enqueue up to ``BATCH`` due steps; several reapers may run (SKIP LOCKED shares them)."""
    now = utcnow()
    async with transaction(resources, SYSTEM) as session:
        pick = (
            select(WorkflowStep.id, WorkflowStep.run_id, WorkflowStep.tenant_id)
            .where(WorkflowStep.due_at <= now, WorkflowStep.status.in_(OPEN))
            .order_by(WorkflowStep.due_at)
            .limit(BATCH)
        )
        if resources.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        due = [StepRef(*row) for row in await session.execute(pick)]
        ids = [ref.step_id for ref in due]
        if ids:
            # Pushed back so the next pass does not send them again while they are queued.
            await session.execute(
                update(WorkflowStep)
                .where(WorkflowStep.id.in_(ids))
                .values(due_at=now + resources.dispatch_grace)
            )
    if due:
        await resources.queue.enqueue(due)
    return len(due)
