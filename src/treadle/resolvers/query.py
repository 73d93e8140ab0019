import strawberry

from treadle.engine.states import RunStatus as RunStatusEnum
from treadle.schema.context import Info
from treadle.schema.trigger import Trigger
from treadle.schema.types import (
    Health,
    Run,
    RunEvent,
    RunPage,
    User,
    Workflow,
    WorkflowPage,
)
from treadle.services import auth, hooks, runs, workflows
from treadle.services.health import check_health


@strawberry.type
class Query:
    @strawberry.field
    async def me(self, info: Info) -> User:
        async with info.context.service() as ctx:
            return User.from_view(await auth.get_me(ctx))

    @strawberry.field
    async def workflows(
        self, info: Info, page: int | None = 1, page_size: int | None = 20
    ) -> WorkflowPage:
        async with info.context.service() as ctx:
            return WorkflowPage.from_page(await workflows.list_workflows(ctx, page, page_size))

    @strawberry.field
    async def workflow(self, info: Info, id: strawberry.ID) -> Workflow | None:
        async with info.context.service() as ctx:
            view = await workflows.find_workflow(ctx, str(id))
        return Workflow.from_view(view) if view else None

    @strawberry.field
    async def runs(
        self,
        info: Info,
        workflow_id: strawberry.ID | None = None,
        status: RunStatusEnum | None = None,
        page: int | None = 1,
        page_size: int | None = 20,
    ) -> RunPage:
        async with info.context.service() as ctx:
            result = await runs.list_runs(
                ctx,
                str(workflow_id) if workflow_id else None,
                status.value if status else None,
                page,
                page_size,
            )
        return RunPage.from_page(result)

    @strawberry.field
    async def run(self, info: Info, id: strawberry.ID) -> Run | None:
        async with info.context.service() as ctx:
            view = await runs.find_run(ctx, str(id))
        return Run.from_view(view) if view else None

    @strawberry.field
    async def run_events(
        self, info: Info, run_id: strawberry.ID, after_seq: int | None = 0, limit: int | None = 100
    ) -> list[RunEvent]:
        async with info.context.service() as ctx:
            events = await runs.list_events(ctx, str(run_id), after_seq, limit)
        return [RunEvent.from_view(event) for event in events]

    @strawberry.field
    async def workflow_triggers(self, info: Info, workflow_id: strawberry.ID) -> list[Trigger]:
        async with info.context.service() as ctx:
            views = await hooks.list_triggers(ctx, str(workflow_id))
        return [Trigger.from_view(view) for view in views]

    @strawberry.field
    async def health(self, info: Info) -> Health:
        return Health.from_view(await check_health(info.context.resources))
