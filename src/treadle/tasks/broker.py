"""The Taskiq side: the ``treadle.run_step`` task, and the brokers that carry it.

Entry points build the broker here and hand it to ``open_resources``: the API and one-off
commands through ``open_runtime``, the worker through ``create_broker`` (``taskiq worker``).
``treadle.resources`` never imports this module, so services, which the task calls, never
import themselves back through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, AsyncBroker, Context, InMemoryBroker, TaskiqDepends
from taskiq.events import TaskiqEvents
from taskiq.state import TaskiqState
from taskiq_redis import RedisStreamBroker

from treadle.logging import configure_logging
from treadle.metrics import Metrics
from treadle.queue import RUN_STEP, StepRef
from treadle.resources import Resources, open_resources
from treadle.services.execution import advance_step
from treadle.settings import Settings
from treadle.tasks.reaper import run_reaper

logger = logging.getLogger(__name__)


async def run_step(
    step_id: str,
    run_id: str | None = None,
    tenant_id: str | None = None,
    context: Context = TaskiqDepends(),  # noqa: B008 - taskiq's dependency marker
) -> None:
    """Advance one workflow step; the whole decision is made under a database lock."""
    ref = None
    if run_id and tenant_id:
        ref = StepRef(uuid.UUID(step_id), uuid.UUID(run_id), uuid.UUID(tenant_id))
    await advance_step(context.state.resources, uuid.UUID(step_id), ref=ref)


class ResilientStreamBroker(RedisStreamBroker):
    """The stream broker, surviving a Redis restart instead of crashing the worker child.

    taskiq-redis's ``listen`` has no error handling: a dropped connection or a stream that
    vanished (Redis restarted without persistence) kills the receiver, and with it the steps in
    flight. Here the loop backs off, re-declares the consumer group and reads on.
    """

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        while True:
            try:
                async for message in super().listen():
                    yield message
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                logger.warning("stream read failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                with contextlib.suppress(RedisError):
                    await self._declare_consumer_group()


def build_broker(settings: Settings, *, embedded: bool) -> AsyncBroker:
    """The Redis stream broker (acknowledged delivery) or, embedded, the in-process one."""
    broker: AsyncBroker
    if embedded or not settings.redis_url:
        broker = InMemoryBroker(max_async_tasks=settings.treadle_worker_concurrency)
    else:
        broker = ResilientStreamBroker(
            settings.redis_url,
            queue_name=settings.treadle_queue_name,
            consumer_group_name=settings.treadle_queue_name,
            # Postgres leases recover dead workers within seconds; the stream's own reclaim is
            # a slow backstop, kept longer than any step so it rarely duplicates live work.
            idle_timeout=int(settings.treadle_stream_idle_seconds * 1000),
            xread_block=1000,
            unacknowledged_lock_timeout=5,
            maxlen=1_000_000,
            # A group re-created after Redis lost it must read what was queued meanwhile.
            consumer_id="0",
        )
    broker.register_task(run_step, task_name=RUN_STEP)
    return broker


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, embedded: bool = False, metrics: Metrics | None = None
) -> AsyncIterator[Resources]:
    """``open_resources`` over a new broker that knows ``treadle.run_step``: for the API,
    embedded mode (whose in-process broker runs the steps) and one-off commands."""
    broker = build_broker(settings, embedded=embedded)
    async with open_resources(settings, broker=broker, metrics=metrics) as res:
        yield res


def create_broker() -> AsyncBroker:
    """Entry point of ``taskiq worker``: builds settings, broker and, on start, resources."""
    settings = Settings()
    configure_logging(settings.log_level, secrets=[settings.jwt_secret, settings.openai_api_key])
    broker = build_broker(settings, embedded=False)
    stack = contextlib.AsyncExitStack()
    # Under `treadle worker` with a metrics port, values go to the parent's shared directory.
    # Without one nobody can read them: record nothing and leave prometheus_client unloaded.
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics = Metrics(multiprocess_dir=shared) if shared else Metrics.disabled()

    async def on_startup(state: TaskiqState) -> None:
        resources = await stack.enter_async_context(
            open_resources(settings, broker=broker, metrics=metrics)
        )
        state.resources = resources
        await stack.enter_async_context(run_reaper(resources))
        logger.info("worker ready")

    async def on_shutdown(state: TaskiqState) -> None:
        await stack.aclose()

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, on_startup)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, on_shutdown)
    return broker
