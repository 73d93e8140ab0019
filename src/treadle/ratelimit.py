"""Rate limits (the ``limits`` library): shared through Redis in production, in memory embedded.

Each limit is a setting such as ``10/minute``; an empty value turns that limit off. A caller over
a limit gets ``RATE_LIMITED`` with ``Retry-After``; the request does nothing else.

The ``limits`` library is imported when a limit is first needed (the API parses them at start,
so a bad setting still stops it there): a worker never counts a hit and does not load it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from treadle.errors import RateLimitedError
from treadle.settings import Settings

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

KEY_PREFIX: Final = "treadle:limits"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    login_per_email: RateLimitItem | None
    login_per_ip: RateLimitItem | None
    register_per_ip: RateLimitItem | None
    api_per_tenant: RateLimitItem | None
    execute_per_tenant: RateLimitItem | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        from limits import parse

        def item(value: str) -> RateLimitItem | None:
            return parse(value) if value.strip() else None

        return cls(
            login_per_email=item(settings.treadle_rate_login_per_email),
            login_per_ip=item(settings.treadle_rate_login_per_ip),
            register_per_ip=item(settings.treadle_rate_register_per_ip),
            api_per_tenant=item(settings.treadle_rate_api_per_tenant),
            execute_per_tenant=item(settings.treadle_rate_execute_per_tenant),
        )


class RateLimiter:
    """Counts hits per (limit name, key) in a sliding window."""

    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self._settings = settings
        self._redis = redis
        self._limits: Limits | None = None
        self._strategy_: SlidingWindowCounterRateLimiter | None = None

    @classmethod
    def build(cls, settings: Settings, redis: Redis | None, *, lazy: bool = False) -> RateLimiter:
        """Counters in Redis (sharing the process's pool) when there is one, else in memory.

        Unless ``lazy``, the limits are parsed (so a bad setting fails at start) and the
        library is loaded now rather than during the first request.
        """
        limiter = cls(settings, redis)
        if not lazy:
            _ = limiter.limits, limiter._strategy
        return limiter

    @property
    def limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.from_settings(self._settings)
        return self._limits

    @property
    def _strategy(self) -> SlidingWindowCounterRateLimiter:
        if self._strategy_ is None:
            from limits.aio.storage import MemoryStorage, RedisStorage
            from limits.aio.strategies import SlidingWindowCounterRateLimiter

            storage: Storage
            if self._settings.redis_url and self._redis is not None:
                storage = RedisStorage(
                    "async+" + self._settings.redis_url,
                    implementation="redispy",
                    key_prefix=KEY_PREFIX,
                    connection_pool=self._redis.connection_pool,  # type: ignore[arg-type] # typed too narrowly upstream
                )
            else:
                storage = MemoryStorage()
            self._strategy_ = SlidingWindowCounterRateLimiter(storage)
        return self._strategy_

    async def hit(self, item: RateLimitItem | None, name: str, key: str) -> None:
        """Count one hit; raise RateLimitedError when ``key`` is over ``item``."""
        if item is None:
            return
        try:
            if await self._strategy.hit(item, name, key):
                return
        except RedisError:
            # Fail open: an unreachable Redis must not turn every request into a 500.
            logger.warning("rate limit store unreachable; %s not counted", name)
            return
        stats = await self._strategy.get_window_stats(item, name, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitedError("too many requests; try again later", retry_after=retry_after)
