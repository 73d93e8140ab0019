"""Firing cron triggers from every worker's reaper loop: each tick exactly once.

Invariants:
- No single scheduler: every reaper pass (any worker, any replica) may fire a due trigger. A
  firer locks the workflow row, then moves the trigger's ``next_at`` on with a compare-and-set;
  only the one whose update matched fires, in that same transaction. The tick's run also
  carries the idempotency key ``cron:<trigger>:<tick>``, unique per workflow, so two firers
  that somehow both got through would still collapse to one run.
- A tick more than ``TREADLE_CRON_GRACE_SECONDS`` old when first seen was missed (nobody was
  running): it is not replayed, unless the trigger sets ``catchUp`` (then the latest missed
  tick fires, once).
- A deleted workflow fires nothing: it is not selected, and the firer's workflow lock waits for
  a delete in progress and then finds it gone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import select, update

from treadle.engine.triggers import CronTrigger, next_tick, prev_tick, ticks
from treadle.errors import NotFoundError
from treadle.models import Workflow, WorkflowTrigger
from treadle.models.base import utcnow
from treadle.services.context import ServiceContext, run_after_commit
from treadle.services.hooks import trigger_actor
from treadle.services.runs import execute_workflow
from treadle.services.triggers import stored_triggers
from treadle.services.workflows import load_workflow
from treadle.tenancy import SYSTEM, transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)

BATCH: Final = 100  # due triggers looked at per pass
MAX_TICKS: Final = 100  # ticks one trigger fires per pass (a per-second schedule after a stall)
_TICK: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Due:
    id: uuid.UUID
    tenant_id: uuid.UUID
    workflow_id: uuid.UUID
    key: str
    next_at: datetime


async def fire_due_triggers(resources: Resources, now: datetime | None = None) -> int:
    """Fire every cron tick that has come; return how many runs this call started."""
    now = now or utcnow()
    async with transaction(resources, SYSTEM) as session:
        rows = await session.execute(
            select(
                WorkflowTrigger.id,
                WorkflowTrigger.tenant_id,
                WorkflowTrigger.workflow_id,
                WorkflowTrigger.key,
                WorkflowTrigger.next_at,
            )
            .join(Workflow, Workflow.id == WorkflowTrigger.workflow_id)
            .where(
                WorkflowTrigger.type == "cron",
                WorkflowTrigger.next_at <= now,
                Workflow.deleted_at.is_(None),
            )
            .order_by(WorkflowTrigger.next_at)
            .limit(BATCH)
        )
        due = [
            _Due(row.id, row.tenant_id, row.workflow_id, row.key, row.next_at)
            for row in rows
            if row.next_at is not None
        ]
    started = 0
    for trigger in due:
        try:
            started += await _fire(resources, trigger, now)
        except Exception:
            logger.exception(
                "cron trigger %s of workflow %s failed", trigger.key, trigger.workflow_id
            )
    return started


async def _fire(resources: Resources, due: _Due, now: datetime) -> int:
    grace = timedelta(seconds=resources.settings.treadle_cron_grace_seconds)
    async with transaction(resources, due.tenant_id) as session:
        ctx = ServiceContext(resources, session, trigger_actor(due.tenant_id))
        try:
            workflow = await load_workflow(ctx, str(due.workflow_id), lock=True)
        except NotFoundError:
            return 0  # deleted meanwhile
        spec = stored_triggers(workflow.definition).get(due.key)
        if not isinstance(spec, CronTrigger):
            return 0  # edited away meanwhile (the sync removed the row)
        fire = due_ticks(spec, due.next_at, now, grace)
        values: dict[str, datetime] = {"next_at": next_tick(spec.schedule, spec.timezone, now)}
        if fire:
            values["last_tick"] = fire[-1]
        moved = await session.execute(
            update(WorkflowTrigger)
            .where(WorkflowTrigger.id == due.id, WorkflowTrigger.next_at == due.next_at)
            .values(**values)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return 0  # another firer took these ticks
        for tick in fire:
            key = f"cron:{due.key}:{tick.isoformat()}"
            await execute_workflow(ctx, str(due.workflow_id), dict(spec.input), key)
    await run_after_commit(ctx.on_commit)
    if fire:
        logger.info("cron trigger %s fired %d tick(s)", due.key, len(fire))
    return len(fire)


def due_ticks(
    spec: CronTrigger, next_at: datetime, now: datetime, grace: timedelta
) -> list[datetime]:
    """The ticks from ``next_at`` to ``now`` to fire: those at most ``grace`` old, plus (with
    ``catchUp``) the latest older one; oldest first, at most ``MAX_TICKS``."""
    cutoff = now - grace
    fire = ticks(spec.schedule, spec.timezone, max(next_at - _TICK, cutoff), now)
    if spec.catch_up and next_at < cutoff:
        missed = prev_tick(spec.schedule, spec.timezone, cutoff + _TICK)
        if next_at <= missed and missed not in fire:
            fire.insert(0, missed)
    return fire[-MAX_TICKS:]
