"""Appending run events in the state change's transaction, publishing them after commit.

After commit each event goes to its run's channel (the full event) and, condensed to a run
update, to its tenant's channel (``runUpdates``, ``WS /ws``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from treadle.engine.json import JSON, JSONObject
from treadle.engine.states import EventType, RunStatus, StepStatus
from treadle.models.base import utcnow
from treadle.pubsub import EventBus, run_channel, tenant_channel
from treadle.services.rows import EventRow, RunRow
from treadle.services.views import EventView, iso

# The status an event moves its run (RUN_*) or its step (STEP_*) to.
STATUS_AFTER: dict[str, str] = {
    EventType.RUN_CREATED: RunStatus.PENDING,
    EventType.RUN_STARTED: RunStatus.RUNNING,
    EventType.RUN_COMPLETED: RunStatus.COMPLETED,
    EventType.RUN_FAILED: RunStatus.FAILED,
    EventType.RUN_CANCELLED: RunStatus.CANCELLED,
    EventType.STEP_STARTED: StepStatus.RUNNING,
    EventType.STEP_COMPLETED: StepStatus.COMPLETED,
    EventType.STEP_RETRYING: StepStatus.RETRYING,
    EventType.STEP_FAILED: StepStatus.FAILED,
    EventType.STEP_SKIPPED: StepStatus.SKIPPED,
    EventType.STEP_CANCELLED: StepStatus.CANCELLED,
    EventType.STEP_WAITING: StepStatus.RUNNING,
}


@dataclass(slots=True)
class EventWriter:
    """Numbers a run's events 1, 2, 3 … for the transaction of the change to insert.

    The caller holds the run row's lock, so concurrent writers of one run take turns.
    ``pending`` are the events not stored yet; ``written`` all of this transaction's.
    """

    run: RunRow
    written: list[EventRow] = field(default_factory=list)
    pending: list[EventRow] = field(default_factory=list)

    def append(self, type_: EventType, node_id: str | None = None, data: JSON = None) -> None:
        self.run.last_seq += 1
        event = EventRow(
            id=uuid.uuid4(),
            tenant_id=self.run.tenant_id,
            run_id=self.run.id,
            seq=self.run.last_seq,
            type=type_.value,
            node_id=node_id,
            data=data if data is not None else {},
            created_at=utcnow(),
        )
        self.written.append(event)
        self.pending.append(event)

    def take_pending(self) -> list[EventRow]:
        pending, self.pending = self.pending, []
        return pending

    def views(self) -> list[EventView]:
        return [event.view() for event in self.written]


def run_update(view: EventView, workflow_id: uuid.UUID) -> JSONObject:
    """The tenant feed's condensed form of one event: whose run, which status, when."""
    return {
        "type": view.type,
        "runId": str(view.run_id),
        "workflowId": str(workflow_id),
        "status": STATUS_AFTER.get(view.type),
        "nodeId": view.node_id,
        "seq": view.seq,
        "at": iso(view.created_at),
    }


async def publish_events(
    bus: EventBus,
    tenant_id: uuid.UUID,
    views: list[EventView],
    workflow_id: uuid.UUID | None = None,
) -> None:
    """Send one run's committed events to live subscribers (and, given the run's workflow, the
    condensed updates to the tenant's feed).

    Best effort: a subscriber that misses a message sees the gap in ``seq`` and re-reads the
    database, so a failed publish delays an event but never loses it. The tenant feed is
    live-only: its readers refetch runs when told to resync.
    """
    if not views:
        return
    await bus.publish_many(run_channel(tenant_id, views[0].run_id), [v.to_json() for v in views])
    if workflow_id is not None:
        updates = [run_update(view, workflow_id) for view in views]
        await bus.publish_many(tenant_channel(tenant_id), updates)
