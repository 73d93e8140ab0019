"""Health of the parts the platform depends on."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated

from pydantic import WithJsonSchema, computed_field
from sqlalchemy import text

from treadle.services.views import View

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)
CHECK_TIMEOUT = 3.0


_UP_OR_DOWN = WithJsonSchema({"type": "string", "enum": ["ok", "down"]})


class HealthView(View):
    database: Annotated[str, _UP_OR_DOWN]
    queue: Annotated[str, _UP_OR_DOWN]

    @computed_field(  # type: ignore[prop-decorator]
        json_schema_extra={"enum": ["ok", "degraded"]}
    )
    @property
    def status(self) -> str:
        return "ok" if self.database == "ok" and self.queue == "ok" else "degraded"


async def check_health(resources: Resources) -> HealthView:
    """Ping the database and, when configured, Redis (queue and pub/sub)."""
    return HealthView(database=await _database(resources), queue=await _queue(resources))


async def _database(resources: Resources) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), resources.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "ok"
    except Exception:
        logger.warning("database health check failed", exc_info=True)
        return "down"


async def _queue(resources: Resources) -> str:
    if resources.redis is None:
        return "ok"  # embedded queue: alive as long as this process is
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await resources.redis.ping()
        return "ok"
    except Exception:
        logger.warning("redis health check failed", exc_info=True)
        return "down"
