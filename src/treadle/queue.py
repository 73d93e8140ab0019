"""The step queue: what gets sent to workers (ids only), the port that sends it, its Taskiq
adapter, and timers that send a step later from this process.

Invariants: a message names a step, never its data, so a message sent twice or late is
harmless (``advance_step`` decides under a lock); anything lost here (a timer in a process that
died, a failed send) is sent again by the reaper.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask
from taskiq_redis import RedisStreamBroker

logger = logging.getLogger(__name__)

RUN_STEP: Final = "treadle.run_step"  # the task name: stable, queued messages carry it
LOCAL_TIMER_HORIZON: Final = 300.0  # seconds; wake-ups further off are the reaper's job


class StepRef(NamedTuple):
    """A step to advance, with its run and tenant so the worker needs no lookup first."""

    step_id: uuid.UUID
    run_id: uuid.UUID
    tenant_id: uuid.UUID


class StepQueue(Protocol):
    async def enqueue(self, steps: Sequence[StepRef]) -> None: ...


StepEnqueue = Callable[[Sequence[StepRef]], Awaitable[None]]


class TaskiqStepQueue:
    """``StepQueue`` over a Taskiq broker that has the ``treadle.run_step`` task."""

    def __init__(self, broker: AsyncBroker) -> None:
        task = broker.find_task(RUN_STEP)
        if task is None:
            raise RuntimeError("broker has no run_step task")
        self._task: AsyncTaskiqDecoratedTask[Any, Any] = task

    async def enqueue(self, steps: Sequence[StepRef]) -> None:
        for step in steps:
            await self._task.kiq(str(step.step_id), str(step.run_id), str(step.tenant_id))

    def stream_entries(self, steps: Sequence[StepRef]) -> list[StreamEntry] | None:
        """The stream entries ``enqueue`` would XADD, for a caller that sends them on its own
        pipeline (one round trip with other commands); None when the broker is no Redis stream
        broker or has middlewares that must see each send."""
        broker = self._task.broker
        if not isinstance(broker, RedisStreamBroker) or broker.middlewares:
            return None
        kicker = self._task.kicker()
        entries = []
        for step in steps:
            message = kicker._prepare_message(
                str(step.step_id), str(step.run_id), str(step.tenant_id)
            )
            data = broker.formatter.dumps(message).message
            entries.append(StreamEntry(broker.queue_name, data, broker.maxlen, broker.approximate))
        return entries


class StreamEntry(NamedTuple):
    """One XADD of a step message: stream, payload, and the broker's trimming."""

    stream: str
    data: bytes
    maxlen: int | None
    approximate: bool


class LocalTimers:
    """Enqueue steps at a given time from this process; cancelled on shutdown."""

    def __init__(self, enqueue: StepEnqueue) -> None:
        self._enqueue = enqueue
        self._handles: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, at: datetime, step: StepRef) -> None:
        delay = max(0.0, (at - datetime.now(UTC)).total_seconds())
        if delay > LOCAL_TIMER_HORIZON:
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._handles.discard(handle)
            task = loop.create_task(self._send(step))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        handle = loop.call_later(delay, fire)
        self._handles.add(handle)

    async def _send(self, step: StepRef) -> None:
        try:
            await self._enqueue([step])
        except Exception:
            logger.warning("timer enqueue failed; the reaper will dispatch", exc_info=True)

    def close(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
