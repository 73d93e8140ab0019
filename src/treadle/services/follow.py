"""Following a run's events: stored history, then live ones, with no gap and no duplicate.

Invariants:
- The subscriber attaches to the live channel *before* it reads history, so an event committed
  in between is either in the history read or in the channel buffer.
- Stored events are yielded strictly in ``seq`` order, each once: a live message is forwarded
  only when it is exactly the next ``seq``; older ones are skipped, a jump is a gap.
- The database holds every event before it is published, so a gap, an overflowed buffer, a
  resync request or a quiet channel all end the same way: re-read the database after the last
  ``seq`` sent. A quiet channel is checked by one follower per process per interval; when
  that check finds events the channel never delivered, every follower of it re-reads.
  Followers that re-read the same page at the same time share one query.
- ``STEP_OUTPUT_DELTA`` messages are live-only; one is forwarded only while its node is open
  (not after that node's completion, failure, retry or cancellation was sent).
- The stream ends after the run's terminal event, or at once when the run already finished
  and the caller has seen everything.
- With a ``sink``, a caught-up follower takes live events inline: while it waits on an empty
  buffer, the bus hands each message to it in the call that received it, and the sink writes
  the event then and there (no task switch, no queue, no database read). The same rules apply
  (exactly the next ``seq``, deltas of open nodes); anything else, or a sink that cannot write
  now, goes through the buffer and the loop below. After the terminal event the follower's
  task is woken to end the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select

from treadle.engine.states import TERMINAL_EVENTS, TERMINAL_RUN, EventType, RunStatus
from treadle.errors import ValidationError
from treadle.models import WorkflowEvent, WorkflowRun
from treadle.pubsub import Subscription, run_channel
from treadle.services.views import EventView
from treadle.tenancy import transaction

if TYPE_CHECKING:
    from treadle.pubsub import Message
    from treadle.resources import Resources

logger = logging.getLogger(__name__)

PAGE: Final = 500
DELTA: Final = "STEP_OUTPUT_DELTA"
_CLOSING: Final = frozenset(
    {
        EventType.STEP_COMPLETED,
        EventType.STEP_FAILED,
        EventType.STEP_RETRYING,
        EventType.STEP_CANCELLED,
        EventType.STEP_SKIPPED,
    }
)
# Pages of stored events being read now, shared by the followers that want the same page.
_READING: dict[tuple[int, uuid.UUID, uuid.UUID, int], _PageRead] = {}
_VIEW: Final = "\x00view"  # where _view() keeps a live message's parsed event
Item = EventView | dict[str, Any]  # stored events, or live-only output deltas (dicts)
# Writes one item at once, synchronously; False when it cannot now (the item then comes
# through the generator instead). Called only when everything before was yielded and sent.
Sink = Callable[[Item], bool]
_WAKE: Final = {"type": "treadle.wake"}  # the inline path sent the terminal event: end now


@dataclass(slots=True)
class _Cursor:
    """What this follower has sent: the last ``seq``, nodes closed to deltas, the end."""

    last: int
    closed: set[str] = field(default_factory=set)
    done: bool = False
    polled: bool = False  # the last return to the database was this process's quiet-run check

    def advance(self, event: EventView) -> None:
        self.last = event.seq
        kind = event.type  # a str; the StrEnum sets compare equal (and it is hot: per subscriber)
        if event.node_id is not None:
            if kind == EventType.STEP_STARTED:
                self.closed.discard(event.node_id)
            elif kind in _CLOSING:
                self.closed.add(event.node_id)
        self.done = kind in TERMINAL_EVENTS

    def finished(self) -> bool:
        return self.done

    def wants_delta(self, message: dict[str, Any]) -> bool:
        return message.get("nodeId") not in self.closed


async def follow_events(
    resources: Resources,
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    after_seq: int,
    sink: Sink | None = None,
) -> AsyncGenerator[Item, None]:
    """Yield the run's events with ``seq > after_seq`` in order, then live ones as they come.

    The caller has already checked that the run belongs to ``tenant_id``. Ends after the
    run's terminal event. Raises ``RateLimitedError`` past the per-tenant subscription limit.
    With ``sink``, live events that can be written at once are written by it and not yielded.
    """
    if after_seq < 0:
        raise ValidationError("afterSeq must be >= 0", fields={"afterSeq": "must be >= 0"})
    settings, channel = resources.settings, run_channel(tenant_id, run_id)
    async with resources.bus.subscribe(
        channel,
        buffer=settings.treadle_subscriber_buffer,
        tenant_limit=settings.treadle_max_subscriptions_per_tenant,
    ) as sub:
        cursor = _Cursor(after_seq)
        poll = settings.treadle_subscriber_poll_seconds
        while True:
            found = False
            # aclosing: a follower closed mid-stream closes the inner generators at once too.
            async with contextlib.aclosing(_catch_up(resources, tenant_id, run_id, cursor)) as old:
                async for event in old:
                    found = True
                    yield event
            if cursor.polled and found:
                # This process's channel missed these: every follower here re-reads.
                resources.bus.resync(channel)
            if cursor.finished():
                return
            async with contextlib.aclosing(_live(sub, cursor, poll, sink)) as live:
                async for item in live:
                    yield item
            if cursor.finished():
                return


async def _live(
    sub: Subscription, cursor: _Cursor, poll_seconds: float, sink: Sink | None = None
) -> AsyncGenerator[Item, None]:
    """Forward live messages while they arrive in order; return to re-read the database.

    A quiet channel is checked against the database once per ``poll_seconds`` by one of its
    followers in this process (the others keep waiting; a check that finds more resyncs all).
    """
    cursor.polled = False
    wait = poll_seconds * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
    inline = None if sink is None else _Inline(sub, cursor, sink)
    while not cursor.finished():
        message = await _parked(sub, inline, wait)
        if cursor.finished():
            return  # the terminal event went out inline
        if message is None:
            if sub.watch.claim(poll_seconds):
                cursor.polled = True
                return
            continue
        if sub.take_overflow():
            return
        if message.get("type") == DELTA:
            if cursor.wants_delta(message):
                yield message
            continue
        seq = message.get("seq")
        if not isinstance(seq, int) or seq <= cursor.last:
            continue  # already sent (from history or an earlier message)
        if seq != cursor.last + 1:
            return  # a gap: the missing events are in the database
        event = _view(message)
        cursor.advance(event)
        yield event


async def _parked(sub: Subscription, inline: _Inline | None, wait: float) -> Message | None:
    """The next buffered message; meanwhile (buffer empty) the bus may hand messages inline."""
    if inline is not None and sub.queue.empty() and not sub.overflowed:
        sub.inline = inline  # parked: everything before was yielded and sent
    try:
        return await sub.get(wait)
    finally:
        sub.inline = None


class _Inline:
    """A parked follower's inline path: the same rules as ``_live``, in the bus's call."""

    __slots__ = ("cursor", "sink", "sub")

    def __init__(self, sub: Subscription, cursor: _Cursor, sink: Sink) -> None:
        self.sub, self.cursor, self.sink = sub, cursor, sink

    def __call__(self, message: Message) -> bool:
        """True when ``message`` was handled (written, or not wanted); False: buffer it."""
        cursor = self.cursor
        try:
            if message.get("type") == DELTA:
                return not cursor.wants_delta(message) or self.sink(message)
            seq = message.get("seq")
            if not isinstance(seq, int) or seq <= cursor.last:
                return True  # already sent
            if seq != cursor.last + 1:
                return False  # a gap: the loop re-reads the database
            event = _view(message)
            if not self.sink(event):
                return False
            cursor.advance(event)
            if cursor.done:
                self.sub.inline = None
                with contextlib.suppress(asyncio.QueueFull):
                    self.sub.queue.put_nowait(_WAKE)
            return True
        except Exception:
            logger.debug("inline delivery failed; buffering", exc_info=True)
            return False


def _view(message: dict[str, Any]) -> EventView:
    """The message's event, parsed once per process: the bus hands the same dict to every
    follower of the channel, so the first one keeps the view in it for the others."""
    view = message.get(_VIEW)
    if not isinstance(view, EventView):
        view = EventView.from_json(message)
        message[_VIEW] = view
    return view


async def _catch_up(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, cursor: _Cursor
) -> AsyncGenerator[EventView, None]:
    """Stored events after ``cursor.last``, page by page, until the history is exhausted."""
    while True:
        page = await _stored(resources, tenant_id, run_id, cursor.last)
        for event in page:
            # Not stopping at a terminal event: a RUN_RESUMED after it (a rerun) reopens the
            # run, and the stream ends only after the last attempt's terminal event.
            cursor.advance(event)
            yield event
        if len(page) < PAGE:
            break
    if not page and await _finished_before(resources, tenant_id, run_id, cursor.last):
        cursor.done = True


async def _stored(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, after_seq: int
) -> list[EventView]:
    """A page of stored events; followers asking for the same page at once share one query.

    Thousands of followers of one run re-read together (attaching, or after a resync): without
    this they would queue for the connection pool, one query each, and time out. A follower
    joins only a read that has not started yet, so every page it gets was read after it asked
    (what the attach-then-read invariant needs).
    """
    key = (id(resources), tenant_id, run_id, after_seq)
    read = _READING.get(key)
    if read is None or read.started:
        read = _PageRead(resources, tenant_id, run_id, after_seq)
        _READING[key] = read
        read.future.add_done_callback(lambda _: _forget_read(key, read))
    return await asyncio.shield(read.future)  # one follower leaving does not cancel the others'


class _PageRead:
    def __init__(
        self, resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, after_seq: int
    ) -> None:
        self.started = False
        self.future = asyncio.ensure_future(self._run(resources, tenant_id, run_id, after_seq))

    async def _run(
        self, resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, after_seq: int
    ) -> list[EventView]:
        self.started = True  # runs a loop step after creation: followers woken together joined
        return await _read_page(resources, tenant_id, run_id, after_seq)


def _forget_read(key: tuple[int, uuid.UUID, uuid.UUID, int], read: _PageRead) -> None:
    if _READING.get(key) is read:
        del _READING[key]


async def _read_page(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, after_seq: int
) -> list[EventView]:
    async with transaction(resources, tenant_id) as session:
        rows = await session.execute(
            select(WorkflowEvent)
            .where(
                WorkflowEvent.tenant_id == tenant_id,
                WorkflowEvent.run_id == run_id,
                WorkflowEvent.seq > after_seq,
            )
            .order_by(WorkflowEvent.seq)
            .limit(PAGE)
        )
        return [EventView.of(row) for row in rows.scalars()]


async def _finished_before(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID, seq: int
) -> bool:
    """True when the run is over and its last event is at or before ``seq``."""
    async with transaction(resources, tenant_id) as session:
        row = (
            await session.execute(
                select(WorkflowRun.status, WorkflowRun.last_seq).where(
                    WorkflowRun.tenant_id == tenant_id, WorkflowRun.id == run_id
                )
            )
        ).one_or_none()
    return row is None or (RunStatus(row.status) in TERMINAL_RUN and row.last_seq <= seq)
