"""Following a run's events: stored history, then live ones, with no gap and no duplicate.

The subscriber attaches to the live channel *before* it reads history, so an event committed
in between is either in the history read or in the channel buffer. Live events are forwarded
only in ``seq`` order; a gap (a lost message, an overflowed buffer, a quiet channel) is filled
from the database, which always holds every event before it is published.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from treadle.engine.states import TERMINAL_EVENTS, EventType
from treadle.models import WorkflowEvent
from treadle.pubsub import Subscription, run_channel
from treadle.services.views import EventView

if TYPE_CHECKING:
    from treadle.resources import Resources

POLL_SECONDS = 5.0  # a quiet channel is re-checked against the database this often
DELTA = "STEP_OUTPUT_DELTA"
Item = EventView | dict[str, Any]  # stored events, or live-only output deltas (dicts)


async def follow_events(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, after_seq: int
) -> AsyncIterator[Item]:
    """Yield events with ``seq > after_seq`` in order, then end after the terminal event."""
    async with resources.bus.subscribe(run_channel(tenant_id, run_id)) as sub:
        last = after_seq
        while True:
            for event in await _stored(resources, run_id, last):
                yield event
                last = event.seq
                if EventType(event.type) in TERMINAL_EVENTS:
                    return
            async for item in _live(sub, last):
                if isinstance(item, dict):
                    yield item
                    continue
                yield item
                last = item.seq
                if EventType(item.type) in TERMINAL_EVENTS:
                    return


async def _live(sub: Subscription, last: int) -> AsyncIterator[Item]:
    """Forward live events while they arrive in order; return to re-read on any gap."""
    while True:
        message = await sub.get(POLL_SECONDS)
        if message is None or sub.overflowed:
            sub.overflowed = False
            _drain(sub)
            return
        if message.get("type") == DELTA:
            yield message
            continue
        seq = int(message["seq"])
        if seq <= last:
            continue  # already sent (from history or an earlier message)
        if seq != last + 1:
            return
        event = EventView.from_json(message)
        yield event
        last = seq


def _drain(sub: Subscription) -> None:
    while not sub.queue.empty():
        sub.queue.get_nowait()


async def _stored(resources: Resources, run_id: uuid.UUID, after_seq: int) -> list[EventView]:
    async with resources.sessions() as session:
        rows = await session.execute(
            select(WorkflowEvent)
            .where(WorkflowEvent.run_id == run_id, WorkflowEvent.seq > after_seq)
            .order_by(WorkflowEvent.seq)
            .limit(1000)
        )
        return [EventView.of(row) for row in rows.scalars()]
