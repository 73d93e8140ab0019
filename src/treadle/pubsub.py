"""Live fan-out of run events: Redis pub/sub in production, in-process in embedded mode.

Invariants:
- Publishing happens after the event's transaction commits; the database stays the truth and
  subscribers fill any gap from it (see ``services.follow``).
- Each subscription owns a bounded queue; a full queue marks the subscription ``overflowed``
  instead of blocking the publisher or growing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.asyncio import Redis

logger = logging.getLogger(__name__)

Message = dict[str, Any]


def run_channel(tenant_id: uuid.UUID | str, run_id: uuid.UUID | str) -> str:
    # Redis pub/sub ignores the DB number, so the channel carries the namespace and tenant.
    return f"treadle:{tenant_id}:run:{run_id}"


class Subscription:
    """Messages for one channel, buffered up to ``maxsize``."""

    def __init__(self, channel: str, maxsize: int) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True

    async def get(self, wait_seconds: float) -> Message | None:
        try:
            return await asyncio.wait_for(self.queue.get(), wait_seconds)
        except TimeoutError:
            return None


class EventBus(Protocol):
    async def publish(self, channel: str, message: Message) -> None: ...

    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    async def ping(self) -> None: ...


class _Fanout:
    """In-memory channel -> subscriptions map shared by both buses."""

    def __init__(self, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        self.subscribers: dict[str, set[Subscription]] = defaultdict(set)

    def deliver(self, channel: str, message: Message) -> None:
        for subscription in tuple(self.subscribers.get(channel, ())):
            subscription.offer(message)

    def add(self, channel: str) -> tuple[Subscription, bool]:
        subscription = Subscription(channel, self.buffer_size)
        first = not self.subscribers[channel]
        self.subscribers[channel].add(subscription)
        return subscription, first

    def remove(self, subscription: Subscription) -> bool:
        subs = self.subscribers.get(subscription.channel)
        if subs is None:
            return False
        subs.discard(subscription)
        if subs:
            return False
        del self.subscribers[subscription.channel]
        return True


class MemoryEventBus:
    """Embedded mode: publisher and subscribers share the process."""

    def __init__(self, buffer_size: int = 1000) -> None:
        self._fanout = _Fanout(buffer_size)

    async def publish(self, channel: str, message: Message) -> None:
        self._fanout.deliver(channel, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription, _ = self._fanout.add(channel)
        try:
            yield subscription
        finally:
            self._fanout.remove(subscription)

    async def ping(self) -> None:
        return None


class RedisEventBus:
    """One Redis pub/sub connection per process, fanned out in memory to subscriptions."""

    def __init__(self, redis: Redis, buffer_size: int = 1000) -> None:
        self._redis = redis
        self._fanout = _Fanout(buffer_size)
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(channel, json.dumps(message, separators=(",", ":")))

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        subscription, first = self._fanout.add(channel)
        try:
            if first:
                await self._ensure_reader()
                async with self._lock:
                    await self._pubsub.subscribe(channel)
            yield subscription
        finally:
            if self._fanout.remove(subscription) and self._pubsub is not None:
                with contextlib.suppress(Exception):
                    async with self._lock:
                        await self._pubsub.unsubscribe(channel)

    async def _ensure_reader(self) -> None:
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        while True:
            try:
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                raw = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A dropped connection: subscribers re-read the database on their poll tick.
                logger.warning("redis pub/sub read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if raw is None or raw.get("type") != "message":
                continue
            channel = raw["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            self._fanout.deliver(channel, json.loads(raw["data"]))

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
