"""The ``Trigger`` object type: a workflow's cron or webhook trigger (see services.triggers)."""

from datetime import datetime

import strawberry

from treadle.services.triggers import TriggerView


@strawberry.type
class Trigger:
    id: strawberry.ID
    workflow_id: strawberry.ID
    key: str
    type: str
    path: str | None
    schedule: str | None
    timezone: str | None
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    secret: str | None  # ADMINs only; null for others

    @classmethod
    def from_view(cls, view: TriggerView) -> "Trigger":
        return cls(
            id=strawberry.ID(str(view.id)),
            workflow_id=strawberry.ID(str(view.workflow_id)),
            key=view.key,
            type=view.type,
            path=view.path,
            schedule=view.schedule,
            timezone=view.timezone,
            next_fire_at=view.next_fire_at,
            last_fired_at=view.last_fired_at,
            secret=view.secret,
        )
