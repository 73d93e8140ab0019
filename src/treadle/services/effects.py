"""A transaction's after-commit effects, sent to Redis in one pipeline.

A committed state change publishes its events (the run's channel and the tenant's feed) and
enqueues the steps it made ready. Sent one by one that is three or more round trips after every
commit; here they are collected and go out in one pipeline (no MULTI: the commands are
independent, and each is harmless to repeat). Without Redis (embedded mode) each effect goes
through its own port as before.

Best effort, like every after-commit effect: the database holds the truth, a subscriber that
misses an event re-reads it, and the reaper sends a step whose message was lost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from treadle.pubsub import Message, RedisEventBus, run_channel, tenant_channel
from treadle.queue import StepRef, TaskiqStepQueue
from treadle.services.events import run_update
from treadle.services.views import EventView

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Effects:
    """What one committed transaction must tell the world."""

    publishes: list[tuple[str, list[Message]]] = field(default_factory=list)
    sends: list[StepRef] = field(default_factory=list)

    def events(
        self, tenant_id: uuid.UUID, views: Sequence[EventView], workflow_id: uuid.UUID | None
    ) -> None:
        """One run's committed events: in full to its channel, condensed to the tenant feed."""
        if not views:
            return
        channel = run_channel(tenant_id, views[0].run_id)
        self.publishes.append((channel, [view.to_json() for view in views]))
        if workflow_id is not None:
            updates = [run_update(view, workflow_id) for view in views]
            self.publishes.append((tenant_channel(tenant_id), updates))


async def flush(resources: Resources, effects: Effects) -> None:
    """Send ``effects``: one Redis pipeline when the bus and the queue both live on Redis."""
    if not effects.publishes and not effects.sends:
        return
    bus, queue, redis = resources.bus, resources.queue, resources.redis
    entries = (
        queue.stream_entries(effects.sends)
        if isinstance(queue, TaskiqStepQueue) and effects.sends
        else []
    )
    if redis is None or not isinstance(bus, RedisEventBus) or entries is None:
        await _one_by_one(resources, effects)
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for channel, messages in effects.publishes:
                bus.publish_on(pipe, channel, messages)
            for entry in entries:
                pipe.xadd(
                    entry.stream,
                    {b"data": entry.data},
                    maxlen=entry.maxlen,
                    approximate=entry.approximate,
                )
            await pipe.execute(raise_on_error=False)
    except Exception:
        logger.warning("after-commit effects failed; the reaper will dispatch", exc_info=True)


async def _one_by_one(resources: Resources, effects: Effects) -> None:
    try:
        for channel, messages in effects.publishes:
            await resources.bus.publish_many(channel, messages)
    except Exception:
        logger.warning("publishing run events failed", exc_info=True)
    try:
        if effects.sends:
            await resources.queue.enqueue(effects.sends)
    except Exception:
        logger.warning("enqueue failed; the reaper will dispatch", exc_info=True)
