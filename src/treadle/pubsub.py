"""Live fan-out of run events: Redis pub/sub in production, in-process in embedded mode.

Invariants:
- Publishing happens after the event's transaction commits; the database stays the truth and
  subscribers fill any gap from it (see ``services.follow``).
- Each subscription owns a bounded queue; a full queue marks the subscription ``overflowed``
  (the consumer then resumes from the database) instead of blocking the publisher or growing.
- ``subscribe`` returns once the channel is live (Redis confirmed the SUBSCRIBE), so anything
  published after it returns reaches the subscription.
- A process holds at most ``tenant_limit`` subscriptions per tenant (when one is given).
- Redis: one pub/sub connection per process, fanned out in memory. Messages sent while that
  connection was down are gone, so after a reconnect (a read error, or Redis confirming a
  channel a second time) the subscriptions are told to resync.
- A subscription whose consumer is parked on an empty buffer may take a message ``inline``: the
  bus hands it over in the same call that received it (no task switch, no queue). When the
  consumer cannot take it (returns False), it goes to the buffer, and ``inline`` stays off
  until the consumer has emptied the buffer and parked again: order is kept either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub

from treadle.errors import RateLimitedError

logger = logging.getLogger(__name__)

Message = dict[str, Any]

DEFAULT_BUFFER: Final = 256
CONFIRM_SECONDS: Final = 5.0  # how long a subscriber waits for Redis to confirm SUBSCRIBE
RESYNC: Final[Message] = {"type": "treadle.resync"}  # wakes a consumer that must re-read


def run_channel(tenant_id: uuid.UUID | str, run_id: uuid.UUID | str) -> str:
    """The channel of one run. Redis pub/sub ignores the DB number: the name carries it all."""
    return f"treadle:{tenant_id}:run:{run_id}"


def tenant_channel(tenant_id: uuid.UUID | str) -> str:
    """The channel of a tenant's run updates (status changes of all its runs)."""
    return f"treadle:{tenant_id}:runs:updates"


def channel_tenant(channel: str) -> str:
    """The tenant part of a ``run_channel`` or ``tenant_channel`` name (else the whole name)."""
    parts = channel.split(":")
    return parts[1] if len(parts) == 4 and parts[0] == "treadle" else channel


@dataclass(frozen=True, slots=True)
class BusStats:
    channels: int
    subscriptions: int
    overflows: int  # times a subscription's buffer filled up and messages were dropped


class ChannelWatch:
    """Shared by the subscriptions of one channel in this process: when one last checked the
    database, so a quiet channel costs one check per interval, not one per subscriber."""

    def __init__(self) -> None:
        self.checked_at = time.monotonic()

    def heard(self) -> None:
        """A message arrived: the channel is alive, so no check is due for another interval
        (a missing event shows as a gap in the next one; only a quiet channel needs a look)."""
        self.checked_at = time.monotonic()

    def claim(self, interval: float) -> bool:
        """True (and the check is this caller's) when nobody checked in the last ``interval``."""
        now = time.monotonic()
        if now - self.checked_at < interval:
            return False
        self.checked_at = now
        return True


class Subscription:
    """Messages for one channel, buffered up to ``maxsize``; never blocks the publisher."""

    def __init__(self, channel: str, maxsize: int, watch: ChannelWatch) -> None:
        self.channel = channel
        self.tenant = channel_tenant(channel)
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False
        self.watch = watch
        # Set by a consumer parked on an empty buffer: takes a message at once (True) or not.
        self.inline: Callable[[Message], bool] | None = None

    def offer(self, message: Message) -> bool:
        """Buffer ``message``; True when this call overflowed the buffer (message dropped)."""
        self.inline = None  # the buffer is not empty now: nothing may overtake it
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            newly = not self.overflowed
            self.overflowed = True
            return newly
        return False

    def resync(self) -> None:
        """Tell the consumer that messages may have been lost, and wake it."""
        self.inline = None
        self.overflowed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(RESYNC)

    async def get(self, wait_seconds: float) -> Message | None:
        """The next message, or None after ``wait_seconds`` of silence."""
        if not self.queue.empty():
            return self.queue.get_nowait()  # no timer needed (the common case under load)
        try:
            async with asyncio.timeout(wait_seconds):
                return await self.queue.get()
        except TimeoutError:
            return None

    def take_overflow(self) -> bool:
        """True (once) when messages were dropped; the buffer is emptied for a fresh start.

        The caller re-reads the database next: anything dropped or discarded here was
        committed before that read.
        """
        if not self.overflowed:
            return False
        self.overflowed = False
        while not self.queue.empty():
            self.queue.get_nowait()
        return True


def _encode(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"))


class EventBus(Protocol):
    async def publish(self, channel: str, message: Message) -> None: ...

    async def publish_many(self, channel: str, messages: Sequence[Message]) -> None: ...

    def subscribe(
        self, channel: str, *, buffer: int | None = None, tenant_limit: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    def stats(self) -> BusStats: ...

    def subscribers(self, channel: str) -> int: ...

    def resync(self, channel: str) -> None: ...

    async def ping(self) -> None: ...


class _FanoutBus:
    """The in-memory part both buses share: channel -> this process's subscriptions."""

    def __init__(self, buffer_size: int) -> None:
        self._buffer_size = buffer_size
        self._channels: dict[str, set[Subscription]] = {}
        self._watches: dict[str, ChannelWatch] = {}
        self._per_tenant: Counter[str] = Counter()
        self._overflows = 0

    def stats(self) -> BusStats:
        count = sum(len(subscribers) for subscribers in self._channels.values())
        return BusStats(len(self._channels), count, self._overflows)

    def subscribers(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def resync(self, channel: str | None = None) -> None:
        """Tell the subscribers of ``channel`` (of every channel by default) to re-read."""
        groups = [self._channels.get(channel, set())] if channel else self._channels.values()
        for subscribers in groups:
            for subscription in subscribers:
                subscription.resync()

    def _deliver(self, channel: str, message: Message) -> None:
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        self._watches[channel].heard()
        for subscription in tuple(subscribers):
            inline = subscription.inline
            if inline is not None and inline(message):
                continue
            if subscription.offer(message):
                self._overflows += 1

    def _add(
        self, channel: str, buffer: int | None, tenant_limit: int | None
    ) -> tuple[Subscription, bool]:
        tenant = channel_tenant(channel)
        if tenant_limit is not None and self._per_tenant[tenant] >= tenant_limit:
            raise RateLimitedError("too many live subscriptions for this tenant", retry_after=5)
        watch = self._watches.setdefault(channel, ChannelWatch())
        subscription = Subscription(channel, buffer or self._buffer_size, watch)
        subscribers = self._channels.setdefault(channel, set())
        first = not subscribers
        subscribers.add(subscription)
        self._per_tenant[tenant] += 1
        return subscription, first

    def _remove(self, subscription: Subscription) -> bool:
        """Forget ``subscription``; True when its channel has no subscriber left."""
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return False
        subscribers.discard(subscription)
        self._per_tenant[subscription.tenant] -= 1
        if self._per_tenant[subscription.tenant] <= 0:
            del self._per_tenant[subscription.tenant]
        if subscribers:
            return False
        del self._channels[subscription.channel], self._watches[subscription.channel]
        return True


class MemoryEventBus(_FanoutBus):
    """Embedded mode: publisher and subscribers share the process (and its event loop)."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        super().__init__(buffer_size)

    async def publish(self, channel: str, message: Message) -> None:
        self._deliver(channel, message)

    async def publish_many(self, channel: str, messages: Sequence[Message]) -> None:
        for message in messages:
            self._deliver(channel, message)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, buffer: int | None = None, tenant_limit: int | None = None
    ) -> AsyncIterator[Subscription]:
        subscription, _ = self._add(channel, buffer, tenant_limit)
        try:
            yield subscription
        finally:
            self._remove(subscription)

    async def ping(self) -> None:
        return None


class RedisEventBus(_FanoutBus):
    """One Redis pub/sub connection per process, fanned out in memory to subscriptions."""

    def __init__(self, redis: Redis, buffer_size: int = DEFAULT_BUFFER) -> None:
        super().__init__(buffer_size)
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._live: dict[str, asyncio.Event] = {}  # channel -> set once Redis confirmed it

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(channel, _encode(message))

    async def publish_many(self, channel: str, messages: Sequence[Message]) -> None:
        """One round trip for a transaction's events (a pipeline keeps their order)."""
        if len(messages) == 1:
            await self.publish(channel, messages[0])
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.publish(channel, _encode(message))
            await pipe.execute()

    def publish_on(self, pipe: Pipeline, channel: str, messages: Sequence[Message]) -> None:
        """Queue the PUBLISHes of ``messages`` on a caller's pipeline (same Redis), so they go
        out in one round trip with the caller's other commands, in order."""
        for message in messages:
            pipe.publish(channel, _encode(message))

    @contextlib.asynccontextmanager
    async def subscribe(
        self, channel: str, *, buffer: int | None = None, tenant_limit: int | None = None
    ) -> AsyncIterator[Subscription]:
        subscription, first = self._add(channel, buffer, tenant_limit)
        try:
            if first:
                self._live[channel] = asyncio.Event()
                await self._command("subscribe", channel)
            await self._confirmed(channel)
            yield subscription
        finally:
            if self._remove(subscription):
                self._live.pop(channel, None)
                with contextlib.suppress(Exception):
                    await self._command("unsubscribe", channel)

    async def _command(self, command: str, channel: str) -> None:
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._redis.pubsub()
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_loop(self._pubsub))
            if command == "subscribe":
                await self._pubsub.subscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)

    async def _confirmed(self, channel: str) -> None:
        live = self._live.get(channel)
        if live is None:
            return
        try:
            async with asyncio.timeout(CONFIRM_SECONDS):
                await live.wait()
        except TimeoutError:
            # Not fatal: the subscriber's database poll covers what the channel misses.
            logger.warning("redis did not confirm the subscription to %s in time", channel)

    async def _read_loop(self, pubsub: PubSub) -> None:
        failed = False
        while True:
            try:
                if not pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                raw = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not failed:
                    logger.warning("redis pub/sub read failed; reconnecting", exc_info=True)
                failed = True
                await asyncio.sleep(0.5)
                continue
            if failed:
                # Back after an outage: whatever was published meanwhile never arrives.
                failed = False
                self.resync()
            if raw is not None:
                self._dispatch(raw)

    def _dispatch(self, raw: dict[str, Any]) -> None:
        channel = raw.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        kind = raw.get("type")
        if kind == "subscribe":
            live = self._live.get(channel)
            if live is not None and live.is_set():
                # redis-py re-subscribed after a reconnect (perhaps inside one get_message
                # call, without an error reaching us): messages may have been lost meanwhile.
                self.resync(channel)
            elif live is not None:
                live.set()
            return
        if kind != "message":
            return
        try:
            message = json.loads(raw["data"])
        except (ValueError, TypeError):
            logger.warning("dropped a malformed message on %s", channel)
            return
        self._deliver(channel, message)

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py: untyped
