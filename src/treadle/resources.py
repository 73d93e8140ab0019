"""Process-wide resources, opened once by each entry point and passed down explicitly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from taskiq import AsyncBroker

from treadle.ai import build_model_client
from treadle.db import SessionMaker, build_engine, build_sessionmaker
from treadle.engine.ai import ModelClient
from treadle.engine.dagcache import DagCache
from treadle.engine.steps import HttpClient, StepRegistry, build_registry
from treadle.engine.template import TemplateEngine
from treadle.metrics import Metrics
from treadle.net.address import EgressPolicy
from treadle.net.lazy import LazyHttpClient
from treadle.pubsub import EventBus, MemoryEventBus, RedisEventBus
from treadle.queue import LocalTimers, StepQueue, TaskiqStepQueue
from treadle.ratelimit import RateLimiter
from treadle.security import IdentityCache, PasswordHasher, TokenCodec
from treadle.settings import Settings


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionMaker
    redis: Redis | None
    bus: EventBus
    broker: AsyncBroker
    queue: StepQueue
    registry: StepRegistry
    dags: DagCache
    templates: TemplateEngine
    http: HttpClient
    model: ModelClient
    hasher: PasswordHasher
    tokens: TokenCodec
    timers: LocalTimers
    limiter: RateLimiter
    identities: IdentityCache
    metrics: Metrics

    @property
    def dispatch_grace(self) -> timedelta:
        """How long a queued step may wait before the reaper sends it again."""
        return timedelta(seconds=self.settings.treadle_dispatch_grace_seconds)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings, *, broker: AsyncBroker, metrics: Metrics | None = None
) -> AsyncIterator[Resources]:
    """Open every client the process needs; close them all on exit.

    The entry point builds ``broker`` (``treadle.tasks.broker``: it knows the tasks, this
    module knows none); it is started here unless it is a worker's, which taskiq starts.
    ``metrics`` is the entry point's registry; without one the process gets a private one.
    """
    async with contextlib.AsyncExitStack() as stack:
        engine = build_engine(
            settings.database_url,
            pool_size=settings.treadle_db_pool_size,
            pool_timeout=settings.treadle_db_pool_timeout_seconds,
        )
        stack.push_async_callback(engine.dispose)
        redis: Redis | None = None
        bus: EventBus
        if settings.redis_url:
            # A blocking pool waits for a free connection instead of failing at the cap.
            pool = BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.treadle_redis_max_connections
            )
            stack.push_async_callback(pool.disconnect)
            redis = Redis(connection_pool=pool)
            stack.push_async_callback(redis.aclose)
            redis_bus = RedisEventBus(redis)
            stack.push_async_callback(redis_bus.aclose)
            bus = redis_bus
        else:
            bus = MemoryEventBus()
        if not broker.is_worker_process:
            await broker.startup()
            stack.push_async_callback(broker.shutdown)
        registry = build_registry()
        # Built on a step's first request: a worker that never calls out never loads httpx.
        http = LazyHttpClient.guarded(EgressPolicy.from_setting(settings.treadle_egress_allow))
        stack.push_async_callback(http.aclose)
        model = build_model_client(settings.openai_api_key, settings.openai_base_url)
        stack.push_async_callback(model.aclose)
        queue = TaskiqStepQueue(broker)
        timers = LocalTimers(queue.enqueue)
        stack.callback(timers.close)
        templates = TemplateEngine()
        stack.callback(templates.close)
        resources = Resources(
            settings=settings,
            engine=engine,
            sessions=build_sessionmaker(engine),
            redis=redis,
            bus=bus,
            broker=broker,
            queue=queue,
            registry=registry,
            dags=DagCache(registry),
            templates=templates,
            http=http,
            model=model,
            hasher=PasswordHasher(
                memory_cost=settings.treadle_argon2_memory_kib,
                time_cost=settings.treadle_argon2_time_cost,
            ),
            tokens=TokenCodec(settings.resolve_jwt_secret(), settings.jwt_ttl_seconds),
            timers=timers,
            # A worker counts no hits: it does not load the `limits` library at all.
            limiter=RateLimiter.build(settings, redis, lazy=broker.is_worker_process),
            identities=IdentityCache(settings.treadle_auth_cache_seconds),
            metrics=metrics if metrics is not None else Metrics(),
        )
        broker.state.resources = resources
        yield resources
