from typing import cast

import strawberry
from strawberry.scalars import JSON

from treadle.engine import json as engine_json
from treadle.schema.context import Info
from treadle.schema.inputs import (
    CreateUserInput,
    LoginInput,
    RegisterInput,
    WorkflowInput,
    WorkflowUpdateInput,
    as_payload,
)
from treadle.schema.types import AuthPayload, Run, User, Workflow
from treadle.services import approval, auth, rerun, runs, workflows


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        context = info.context
        view = await auth.register(
            context.resources, as_payload(input), client_ip=context.client_ip
        )
        return AuthPayload.from_view(view)

    @strawberry.mutation
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        context = info.context
        view = await auth.login(context.resources, as_payload(input), client_ip=context.client_ip)
        return AuthPayload.from_view(view)

    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> User:
        context = info.context
        actor = await context.caller()
        return User.from_view(await auth.create_user(context.resources, actor, as_payload(input)))

    @strawberry.mutation
    async def create_workflow(self, info: Info, input: WorkflowInput) -> Workflow:
        async with info.context.service() as ctx:
            return Workflow.from_view(await workflows.create_workflow(ctx, as_payload(input)))

    @strawberry.mutation
    async def update_workflow(
        self, info: Info, id: strawberry.ID, input: WorkflowUpdateInput
    ) -> Workflow:
        async with info.context.service() as ctx:
            view = await workflows.update_workflow(ctx, str(id), as_payload(input))
        return Workflow.from_view(view)

    @strawberry.mutation
    async def delete_workflow(self, info: Info, id: strawberry.ID) -> bool:
        async with info.context.service() as ctx:
            await workflows.delete_workflow(ctx, str(id))
        return True

    @strawberry.mutation
    async def execute_workflow(
        self,
        info: Info,
        id: strawberry.ID,
        input: JSON | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        async with info.context.service() as ctx:
            execution = await runs.execute_workflow(
                ctx, str(id), cast(engine_json.JSON, input), idempotency_key
            )
        return Run.from_view(execution.run)

    @strawberry.mutation
    async def cancel_run(self, info: Info, id: strawberry.ID) -> Run:
        async with info.context.service() as ctx:
            return Run.from_view(await runs.cancel_run(ctx, str(id)))

    @strawberry.mutation
    async def rerun_run(
        self,
        info: Info,
        id: strawberry.ID,
        from_node_id: strawberry.ID | None = None,
        input: JSON | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        async with info.context.service() as ctx:
            execution = await rerun.rerun_run(
                ctx,
                str(id),
                None if from_node_id is None else str(from_node_id),
                cast(engine_json.JSON, input),
                idempotency_key,
            )
        return Run.from_view(execution.run)

    @strawberry.mutation
    async def resolve_approval(
        self,
        info: Info,
        run_id: strawberry.ID,
        node_id: strawberry.ID,
        approved: bool,
        comment: str | None = None,
        data: JSON | None = None,
    ) -> Run:
        async with info.context.service() as ctx:
            view = await approval.resolve_approval(
                ctx,
                str(run_id),
                str(node_id),
                approved,
                comment,
                cast(engine_json.JSON, data),
            )
        return Run.from_view(view)
