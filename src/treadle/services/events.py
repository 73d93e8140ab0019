"""Appending run events in the state change's transaction, publishing them after commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from treadle.db import AsyncSession
from treadle.engine.json import JSON
from treadle.engine.states import EventType
from treadle.models import WorkflowEvent, WorkflowRun
from treadle.models.base import utcnow
from treadle.pubsub import EventBus, run_channel
from treadle.services.views import EventView


@dataclass(slots=True)
class EventWriter:
    """Numbers a run's events 1, 2, 3 … and adds them to the session of the change.

    The caller holds the run row's lock, so concurrent writers of one run take turns.
    """

    run: WorkflowRun
    session: AsyncSession
    written: list[WorkflowEvent] = field(default_factory=list)

    def append(self, type_: EventType, node_id: str | None = None, data: JSON = None) -> None:
        self.run.last_seq += 1
        event = WorkflowEvent(
            id=uuid.uuid4(),
            tenant_id=self.run.tenant_id,
            run_id=self.run.id,
            seq=self.run.last_seq,
            type=type_.value,
            node_id=node_id,
            data=data if data is not None else {},
            created_at=utcnow(),
        )
        self.session.add(event)
        self.written.append(event)

    def views(self) -> list[EventView]:
        return [EventView.of(event) for event in self.written]


async def publish_events(bus: EventBus, tenant_id: uuid.UUID, views: list[EventView]) -> None:
    """Send one run's committed events to live subscribers.

    Best effort: a subscriber that misses a message sees the gap in ``seq`` and re-reads the
    database, so a failed publish delays an event but never loses it.
    """
    if views:
        channel = run_channel(tenant_id, views[0].run_id)
        await bus.publish_many(channel, [view.to_json() for view in views])
