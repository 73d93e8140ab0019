"""Trigger rows kept in step with a workflow's definition, and how they are shown.

Invariants:
- A trigger row is keyed by (workflow, trigger id in the definition): editing a workflow keeps
  the row (its public id, its webhook secret) as long as the trigger keeps its id and type.
- A new or changed cron schedule starts at the next tick after the change: ticks from before
  a trigger existed are never fired.
- A webhook secret is made here (``secrets``), stored once, and shown only to ADMINs.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, WithJsonSchema, computed_field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import delete, select

from treadle.engine.json import JSONObject
from treadle.engine.triggers import TRIGGER, CronTrigger, WebhookTrigger, next_tick
from treadle.models import Workflow, WorkflowTrigger
from treadle.models.base import utcnow
from treadle.security import Actor, Role
from treadle.services.context import ServiceContext
from treadle.services.views import Instant, View

SECRET_BYTES = 32
HOOK_PATH = "/api/hooks/{id}"


def stored_triggers(definition: JSONObject) -> dict[str, CronTrigger | WebhookTrigger]:
    """The triggers of a stored (canonical) definition by id; none when it has none."""
    raw = definition.get("triggers")
    found: dict[str, CronTrigger | WebhookTrigger] = {}
    for item in raw if isinstance(raw, list) else []:
        try:
            trigger = TRIGGER.validate_python(item)
        except PydanticValidationError:
            continue  # stored definitions were validated; a stale shape is simply inert
        if trigger.id is not None:
            found[trigger.id] = trigger
    return found


async def sync_triggers(ctx: ServiceContext, workflow: Workflow) -> None:
    """Create, keep, re-arm or delete the workflow's trigger rows to match its definition."""
    specs = stored_triggers(workflow.definition)
    rows = await ctx.session.execute(
        select(WorkflowTrigger).where(WorkflowTrigger.workflow_id == workflow.id)
    )
    existing = {row.key: row for row in rows.scalars()}
    gone = [row.id for key, row in existing.items() if _replaced(row, specs.get(key))]
    if gone:
        await ctx.session.execute(delete(WorkflowTrigger).where(WorkflowTrigger.id.in_(gone)))
    now = utcnow()
    for key, spec in specs.items():
        row = existing.get(key)
        if row is None or row.id in gone:
            row = WorkflowTrigger(
                id=uuid.uuid4(),
                tenant_id=workflow.tenant_id,
                workflow_id=workflow.id,
                key=key,
                type=spec.type,
                secret=secrets.token_hex(SECRET_BYTES) if spec.type == "webhook" else None,
                created_at=now,
            )
            ctx.session.add(row)
        if isinstance(spec, CronTrigger):
            _arm(row, spec, now)
    await ctx.session.flush()


def _replaced(row: WorkflowTrigger, spec: CronTrigger | WebhookTrigger | None) -> bool:
    return spec is None or spec.type != row.type


def _arm(row: WorkflowTrigger, spec: CronTrigger, now: datetime) -> None:
    """A new or changed schedule fires from its next tick on; an unchanged one keeps going."""
    if row.schedule == spec.schedule and row.timezone == spec.timezone and row.next_at:
        return
    row.schedule, row.timezone = spec.schedule, spec.timezone
    row.next_at, row.last_tick = next_tick(spec.schedule, spec.timezone, now), None


class TriggerView(View):
    """A cron or webhook trigger of a workflow; its secret is null unless the caller is an ADMIN."""

    id: uuid.UUID
    workflow_id: uuid.UUID
    key: str
    type: Annotated[str, WithJsonSchema({"type": "string", "enum": ["cron", "webhook"]})]
    schedule: str | None
    timezone: str | None
    next_fire_at: Instant | None
    last_fired_at: Instant | None
    secret: str | None = Field(
        description="A webhook's HMAC key; shown to ADMINs only (else null)."
    )

    @classmethod
    def of(cls, row: WorkflowTrigger, actor: Actor) -> TriggerView:
        return cls(
            id=row.id,
            workflow_id=row.workflow_id,
            key=row.key,
            type=row.type,
            schedule=row.schedule,
            timezone=row.timezone,
            next_fire_at=row.next_at,
            last_fired_at=row.last_tick,
            secret=row.secret if actor.role is Role.ADMIN else None,
        )

    @computed_field(description="A webhook's URL path.")  # type: ignore[prop-decorator]
    @property
    def path(self) -> str | None:
        return HOOK_PATH.format(id=self.id) if self.type == "webhook" else None
