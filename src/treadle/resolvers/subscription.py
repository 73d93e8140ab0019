from collections.abc import AsyncGenerator

import strawberry

from treadle.schema.context import Info
from treadle.schema.types import RunEvent
from treadle.services import runs
from treadle.services.follow import follow_events


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def run_events(
        self, info: Info, run_id: strawberry.ID, after_seq: int | None = 0
    ) -> AsyncGenerator[RunEvent, None]:
        async with info.context.service() as ctx:
            run = await runs.require_run(ctx, str(run_id))  # another tenant's: NOT_FOUND
        resources = info.context.resources
        start = after_seq or 0
        async for item in follow_events(resources, run.tenant_id, run.id, start):
            yield RunEvent.from_item(item)
