"""A tenant's live feed of run updates: runs created, started, each step's status, finished.

Invariants:
- Only the caller's tenant's channel is read (``tenant_channel(actor.tenant_id)``): another
  tenant's runs never reach it, whatever filter the caller passes.
- The feed is live-only, in commit order per run (``seq``), never replayed. When this process
  may have dropped updates (a full buffer, a lost Redis connection) the reader gets one
  ``RESYNC`` update and should refetch the runs it shows; ``runEvents`` is the gap-free stream.
- The first item is ``None``, yielded once the channel is live and the subscription counted
  against the tenant's limit, so callers can surface those errors before streaming.
- The wait for the next item is bounded by the token's expiry (UNAUTHENTICATED).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from treadle.errors import UnauthenticatedError
from treadle.pubsub import RESYNC, tenant_channel
from treadle.security import Actor

if TYPE_CHECKING:
    from treadle.resources import Resources

T = TypeVar("T")
Update = dict[str, Any]
RESYNC_UPDATE: Final[Update] = {
    "type": "RESYNC",
    "runId": None,
    "workflowId": None,
    "status": None,
    "nodeId": None,
    "seq": None,
    "at": None,
}
_IDLE_SECONDS: Final = 60.0


async def follow_updates(
    resources: Resources, actor: Actor, workflow_id: str | None = None
) -> AsyncGenerator[Update | None, None]:
    """``None`` once attached, then the tenant's run updates (of one workflow, if given).

    Raises ``RateLimitedError`` past the per-tenant subscription limit.
    """
    settings = resources.settings
    async with resources.bus.subscribe(
        tenant_channel(actor.tenant_id),
        buffer=settings.treadle_subscriber_buffer,
        tenant_limit=settings.treadle_max_subscriptions_per_tenant,
    ) as sub:
        yield None
        while True:
            message = await sub.get(_IDLE_SECONDS)
            if sub.take_overflow():
                yield RESYNC_UPDATE
                continue
            if message is None or message.get("type") == RESYNC["type"]:
                continue
            if workflow_id is None or message.get("workflowId") == workflow_id:
                yield message


async def next_before_expiry(items: AsyncIterator[T], actor: Actor) -> T:
    """The next item of ``items``; UNAUTHENTICATED once ``actor``'s token expires, even while
    nothing arrives. ``StopAsyncIteration`` passes through."""
    if actor.expires_at is None:
        return await anext(items)
    try:
        async with asyncio.timeout(max(actor.expires_at - time.time(), 0.0)):
            return await anext(items)
    except TimeoutError:
        raise UnauthenticatedError("token expired; subscribe again with a new one") from None
