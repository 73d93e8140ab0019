"""Workflow definitions: create, list, get, update (version + 1), soft delete."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, JsonValue, StringConstraints
from sqlalchemy import func, select

from treadle.engine.dag import parse_definition
from treadle.engine.json import JSONObject
from treadle.errors import NotFoundError, ValidationError
from treadle.models import Workflow
from treadle.models.base import utcnow
from treadle.redact import restore_definition
from treadle.services.context import ServiceContext, owned_by
from treadle.services.triggers import sync_triggers
from treadle.services.views import Page, WorkflowView, parse_input

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=10_000)]


class WorkflowInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    description: Description = ""
    definition: JsonValue


class WorkflowUpdateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    description: Description | None = None
    definition: JsonValue = None


def check_page(page: int | None, page_size: int | None) -> tuple[int, int]:
    """Validate paging arguments (``pageSize`` at most 100); None means the default."""
    page = 1 if page is None else page
    page_size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if page < 1:
        raise ValidationError("page must be at least 1", fields={"page": "must be >= 1"})
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError(
            f"pageSize must be between 1 and {MAX_PAGE_SIZE}",
            fields={"pageSize": f"must be 1..{MAX_PAGE_SIZE}"},
        )
    return page, page_size


def _canonical(ctx: ServiceContext, definition: object) -> JSONObject:
    return parse_definition(definition, ctx.resources.registry).to_json()


async def create_workflow(ctx: ServiceContext, data: object) -> WorkflowView:
    """Validate the definition and store version 1."""
    actor = ctx.require_actor()
    args = parse_input(WorkflowInput, data)
    now = utcnow()
    row = Workflow(
        id=uuid.uuid4(),
        tenant_id=actor.tenant_id,
        name=args.name,
        description=args.description,
        definition=_canonical(ctx, args.definition),
        version=1,
        created_at=now,
        updated_at=now,
    )
    ctx.session.add(row)
    await ctx.session.flush()
    await sync_triggers(ctx, row)
    return WorkflowView.of(row)


async def list_workflows(
    ctx: ServiceContext, page: int | None, page_size: int | None
) -> Page[WorkflowView]:
    """The tenant's live workflows, newest first."""
    actor = ctx.require_actor()
    page, page_size = check_page(page, page_size)
    base = owned_by(select(Workflow), Workflow, actor).where(Workflow.deleted_at.is_(None))
    total = (await ctx.session.execute(select(func.count()).select_from(base.subquery()))).scalar()
    rows = await ctx.session.execute(
        base.order_by(Workflow.created_at.desc(), Workflow.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    items = tuple(WorkflowView.of(row) for row in rows.scalars())
    return Page(items=items, page=page, page_size=page_size, total=int(total or 0))


async def load_workflow(ctx: ServiceContext, workflow_id: str, *, lock: bool = False) -> Workflow:
    """The caller's live workflow row, or NotFoundError (also for another tenant's id)."""
    actor = ctx.require_actor()
    key = parse_uuid(workflow_id, "workflow")
    stmt = owned_by(select(Workflow), Workflow, actor).where(
        Workflow.id == key, Workflow.deleted_at.is_(None)
    )
    if lock and ctx.resources.is_postgres:
        stmt = stmt.with_for_update()
    row = (await ctx.session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFoundError("workflow not found")
    return row


async def get_workflow(ctx: ServiceContext, workflow_id: str) -> WorkflowView:
    return WorkflowView.of(await load_workflow(ctx, workflow_id))


async def find_workflow(ctx: ServiceContext, workflow_id: str) -> WorkflowView | None:
    try:
        return await get_workflow(ctx, workflow_id)
    except NotFoundError:
        return None


async def update_workflow(ctx: ServiceContext, workflow_id: str, data: object) -> WorkflowView:
    """Change any subset of name, description and definition; the version goes up by one."""
    args = parse_input(WorkflowUpdateInput, data)
    row = await load_workflow(ctx, workflow_id, lock=True)
    if args.name is not None:
        row.name = args.name
    if args.description is not None:
        row.description = args.description
    if args.definition is not None:
        given = args.definition
        if isinstance(given, dict):
            given = restore_definition(given, row.definition)
        row.definition = _canonical(ctx, given)
    row.version += 1
    row.updated_at = utcnow()
    await ctx.session.flush()
    if args.definition is not None:
        await sync_triggers(ctx, row)
    return WorkflowView.of(row)


async def delete_workflow(ctx: ServiceContext, workflow_id: str) -> None:
    """Soft delete: the workflow disappears everywhere but its past runs."""
    row = await load_workflow(ctx, workflow_id, lock=True)
    row.deleted_at = utcnow()
    await ctx.session.flush()


def parse_uuid(value: str, what: str) -> uuid.UUID:
    """A malformed id cannot name anything: NOT_FOUND, like any other unknown id."""
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise NotFoundError(f"{what} not found") from exc
