"""The reaper: re-dispatches steps whose time has come (ready, retry due, lease expired, wake)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from treadle.services.cron import fire_due_triggers
from treadle.services.dispatch import dispatch_due

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)


async def _loop(resources: Resources) -> None:
    interval = resources.settings.treadle_reaper_interval_seconds
    while True:
        try:
            count = await dispatch_due(resources)
            if count:
                logger.info("reaper dispatched %d due steps", count)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reaper pass failed")
        try:
            await fire_due_triggers(resources)  # cron: every worker may fire, each tick once
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("cron pass failed")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def run_reaper(resources: Resources) -> AsyncIterator[None]:
    """Run the reaper loop for the duration of the block."""
    task = asyncio.create_task(_loop(resources), name="treadle-reaper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
