"""Object types: the REST shapes, camelCase in the schema."""

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from treadle.engine.states import RunStatus as RunStatusEnum
from treadle.engine.states import StepStatus as StepStatusEnum
from treadle.schema.context import Info
from treadle.security import Role as RoleEnum
from treadle.services.health import HealthView
from treadle.services.views import (
    AuthView,
    EventView,
    Page,
    RunView,
    StepView,
    TenantView,
    UserView,
    WorkflowView,
)

# Registers the domain enums with Strawberry under their schema names (metadata only).
RunStatus = strawberry.enum(RunStatusEnum, name="RunStatus")
StepStatus = strawberry.enum(StepStatusEnum, name="StepStatus")
Role = strawberry.enum(RoleEnum, name="Role")


def as_json(value: object) -> JSON:
    """Our JSON values, typed as Strawberry's JSON scalar."""
    return cast(JSON, value)


@strawberry.type
class Tenant:
    id: strawberry.ID
    name: str

    @classmethod
    def from_view(cls, view: TenantView) -> "Tenant":
        return cls(id=strawberry.ID(str(view.id)), name=view.name)


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    name: str
    role: RoleEnum
    tenant_id: strawberry.ID

    @classmethod
    def from_view(cls, view: UserView) -> "User":
        return cls(
            id=strawberry.ID(str(view.id)),
            email=view.email,
            name=view.name,
            role=RoleEnum(view.role),
            tenant_id=strawberry.ID(str(view.tenant_id)),
        )


@strawberry.type
class AuthPayload:
    token: str
    user: User
    tenant: Tenant

    @classmethod
    def from_view(cls, view: AuthView) -> "AuthPayload":
        return cls(
            token=view.token, user=User.from_view(view.user), tenant=Tenant.from_view(view.tenant)
        )


@strawberry.type
class Step:
    id: strawberry.ID
    node_id: str
    type: str
    status: StepStatusEnum
    attempt: int
    output: JSON | None
    error: JSON | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_view(cls, view: StepView) -> "Step":
        return cls(
            id=strawberry.ID(str(view.id)),
            node_id=view.node_id,
            type=view.type,
            status=StepStatusEnum(view.status),
            attempt=view.attempt,
            output=as_json(view.output),
            error=as_json(view.error),
            started_at=view.started_at,
            finished_at=view.finished_at,
        )


@strawberry.type(
    description="A run event. Live-only STEP_OUTPUT_DELTA events have no id and no seq."
)
class RunEvent:
    id: strawberry.ID | None
    run_id: strawberry.ID
    seq: int | None
    type: str
    node_id: str | None
    data: JSON | None
    created_at: datetime

    @classmethod
    def from_view(cls, view: EventView) -> "RunEvent":
        return cls(
            id=strawberry.ID(str(view.id)),
            run_id=strawberry.ID(str(view.run_id)),
            seq=view.seq,
            type=view.type,
            node_id=view.node_id,
            data=as_json(view.data),
            created_at=view.created_at,
        )

    @classmethod
    def from_item(cls, item: EventView | dict[str, Any]) -> "RunEvent":
        if isinstance(item, EventView):
            return cls.from_view(item)
        return cls(
            id=None,
            run_id=strawberry.ID(str(item["runId"])),
            seq=None,
            type=str(item["type"]),
            node_id=item.get("nodeId"),
            data=as_json(item.get("data")),
            created_at=datetime.now(UTC),
        )


@strawberry.type
class Run:
    id: strawberry.ID
    workflow_id: strawberry.ID
    workflow_version: int
    status: RunStatusEnum
    input: JSON | None
    output: JSON | None
    error: JSON | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    view: strawberry.Private[RunView]

    @classmethod
    def from_view(cls, view: RunView) -> "Run":
        return cls(
            id=strawberry.ID(str(view.id)),
            workflow_id=strawberry.ID(str(view.workflow_id)),
            workflow_version=view.workflow_version,
            status=RunStatusEnum(view.status),
            input=as_json(view.input),
            output=as_json(view.output),
            error=as_json(view.error),
            created_at=view.created_at,
            started_at=view.started_at,
            finished_at=view.finished_at,
            view=view,
        )

    @strawberry.field
    async def steps(self, info: Info) -> list[Step]:
        steps = self.view.steps
        if steps is None:  # a run from a list: batched with its siblings
            steps = await info.context.steps_loader.load(self.view.id)
        return [Step.from_view(step) for step in steps]

    @strawberry.field
    async def events(
        self, info: Info, after_seq: int | None = 0, limit: int | None = 100
    ) -> list[RunEvent]:
        events = await info.context.events_loader.load((self.view.id, after_seq, limit))
        return [RunEvent.from_view(event) for event in events]


@strawberry.type
class RunPage:
    items: list[Run]
    page: int
    page_size: int
    total: int

    @classmethod
    def from_page(cls, page: Page[RunView]) -> "RunPage":
        return cls(
            items=[Run.from_view(v) for v in page.items],
            page=page.page,
            page_size=page.page_size,
            total=page.total,
        )


@strawberry.type
class Workflow:
    id: strawberry.ID
    name: str
    description: str
    version: int
    definition: JSON
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: WorkflowView) -> "Workflow":
        return cls(
            id=strawberry.ID(str(view.id)),
            name=view.name,
            description=view.description,
            version=view.version,
            definition=as_json(view.definition),
            created_at=view.created_at,
            updated_at=view.updated_at,
        )

    @strawberry.field
    async def runs(
        self,
        info: Info,
        status: RunStatusEnum | None = None,
        page: int | None = 1,
        page_size: int | None = 20,
    ) -> RunPage:
        key = (uuid.UUID(self.id), status.value if status else None, page, page_size)
        return RunPage.from_page(await info.context.runs_loader.load(key))


@strawberry.type
class WorkflowPage:
    items: list[Workflow]
    page: int
    page_size: int
    total: int

    @classmethod
    def from_page(cls, page: Page[WorkflowView]) -> "WorkflowPage":
        return cls(
            items=[Workflow.from_view(v) for v in page.items],
            page=page.page,
            page_size=page.page_size,
            total=page.total,
        )


@strawberry.type
class Health:
    status: str
    database: str
    queue: str

    @classmethod
    def from_view(cls, view: HealthView) -> "Health":
        return cls(status=view.status, database=view.database, queue=view.queue)


@strawberry.type(description="A status change of one of the tenant's runs (runUpdates).")
class RunUpdate:
    type: str = strawberry.field(description="The event type, or RESYNC: refetch, some were lost")
    run_id: strawberry.ID | None
    workflow_id: strawberry.ID | None
    status: str | None = strawberry.field(description="The run's or the step's new status")
    node_id: str | None
    seq: int | None
    at: datetime | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "RunUpdate":
        run_id, workflow_id, at = body.get("runId"), body.get("workflowId"), body.get("at")
        return cls(
            type=str(body.get("type")),
            run_id=None if run_id is None else strawberry.ID(str(run_id)),
            workflow_id=None if workflow_id is None else strawberry.ID(str(workflow_id)),
            status=body.get("status"),
            node_id=body.get("nodeId"),
            seq=body.get("seq"),
            at=None if at is None else datetime.fromisoformat(str(at).replace("Z", "+00:00")),
        )
