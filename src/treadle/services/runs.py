"""Runs: execute (with idempotency keys), read, list, events, cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy import func, select

from treadle.engine.json import JSON, JSONObject
from treadle.engine.states import TERMINAL_RUN, EventType, RunStatus, StepStatus
from treadle.errors import ConflictError, NotFoundError, ValidationError
from treadle.models import Workflow, WorkflowEvent, WorkflowRun, WorkflowStep
from treadle.models.base import utcnow
from treadle.services import rows
from treadle.services.context import ServiceContext, owned_by
from treadle.services.events import EventWriter
from treadle.services.progress import cancel_open_steps, finish_run, settle
from treadle.services.rows import RunRow, StepRow, insert_new
from treadle.services.runtxn import RunTxn, after_commit, dag_key, load_run_txn
from treadle.services.views import EventView, Page, RunView, StepView, parse_input
from treadle.services.workflows import check_page, load_workflow, parse_uuid

IDEMPOTENCY_WINDOW = timedelta(hours=24)
MAX_EVENTS_PAGE = 1000


class ExecuteInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: JsonValue = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None


@dataclass(frozen=True, slots=True)
class Execution:
    run: RunView
    created: bool  # False when an idempotency key named an existing run


async def execute_workflow(
    ctx: ServiceContext, workflow_id: str, input_: JSON, idempotency_key: str | None
) -> Execution:
    """Start a run of the workflow's current version; the same key within 24 h gives that run."""
    actor = ctx.require_actor()
    args = parse_input(ExecuteInput, {"input": input_, "idempotency_key": idempotency_key})
    if args.input is not None and not isinstance(args.input, dict):
        raise ValidationError("input must be a JSON object", fields={"input": "must be an object"})
    limiter = ctx.resources.limiter
    await limiter.hit(limiter.limits.execute_per_tenant, "execute", str(actor.tenant_id))
    workflow = await load_workflow(ctx, workflow_id, lock=args.idempotency_key is not None)
    if args.idempotency_key:
        existing = await _run_for_key(ctx, workflow.id, args.idempotency_key)
        if existing is not None:
            return Execution(run=await _view(ctx, existing), created=False)
    return Execution(run=await _start(ctx, workflow, args), created=True)


async def _start(ctx: ServiceContext, workflow: Workflow, args: ExecuteInput) -> RunView:
    """Insert the run, its steps (settled in memory first) and first events, in one statement
    on PostgreSQL; then its effects go out after commit."""
    actor = ctx.require_actor()
    now = utcnow()
    run = RunRow(
        id=uuid.uuid4(),
        tenant_id=actor.tenant_id,
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        definition=workflow.definition,
        status=RunStatus.PENDING,
        input=args.input if args.input is not None else {},
        output=None,
        error=None,
        idempotency_key=args.idempotency_key,
        last_seq=0,
        created_at=now,
        started_at=None,
        finished_at=None,
    )
    dag = ctx.resources.dags.get(dag_key(run), run.definition)
    steps = {
        node_id: StepRow(
            id=uuid.uuid4(),
            tenant_id=actor.tenant_id,
            run_id=run.id,
            node_id=node_id,
            type=node.type,
            status=StepStatus.PENDING,
        )
        for node_id, node in dag.nodes.items()
    }
    postgres = ctx.resources.is_postgres
    txn = RunTxn(ctx.session, run, steps, EventWriter(run), postgres)
    txn.writer.append(EventType.RUN_CREATED, None, {"workflowVersion": workflow.version})
    txn.dispatch = settle(run, dag, steps, txn.writer, now, ctx.resources.dispatch_grace)
    await insert_new(ctx.session, run, steps, txn.writer.take_pending(), postgres=postgres)
    defer_effects(ctx, txn)
    return run_view(run, steps)


async def _run_for_key(ctx: ServiceContext, workflow_id: uuid.UUID, key: str) -> WorkflowRun | None:
    actor = ctx.require_actor()
    stmt = owned_by(select(WorkflowRun), WorkflowRun, actor).where(
        WorkflowRun.workflow_id == workflow_id, WorkflowRun.idempotency_key == key
    )
    run = (await ctx.session.execute(stmt)).scalar_one_or_none()
    if run is None:
        return None
    if run.created_at >= utcnow() - IDEMPOTENCY_WINDOW:
        return run
    run.idempotency_key = None  # expired: the key is free for a new run
    await ctx.session.flush()
    return None


async def _load_run(ctx: ServiceContext, run_id: str) -> WorkflowRun:
    actor = ctx.require_actor()
    key = parse_uuid(run_id, "run")
    stmt = owned_by(select(WorkflowRun), WorkflowRun, actor).where(WorkflowRun.id == key)
    run = (await ctx.session.execute(stmt)).scalar_one_or_none()
    if run is None:
        raise NotFoundError("run not found")
    return run


async def _view(ctx: ServiceContext, run: WorkflowRun) -> RunView:
    rows = await ctx.session.execute(select(WorkflowStep).where(WorkflowStep.run_id == run.id))
    steps = {row.node_id: row for row in rows.scalars()}
    order = _node_order(run.definition)
    return RunView.of(run, tuple(StepView.of(steps[node]) for node in order if node in steps))


async def get_run(ctx: ServiceContext, run_id: str) -> RunView:
    """The run with its steps in definition order; NOT_FOUND for another tenant's run."""
    return await _view(ctx, await _load_run(ctx, run_id))


async def find_run(ctx: ServiceContext, run_id: str) -> RunView | None:
    try:
        return await get_run(ctx, run_id)
    except NotFoundError:
        return None


async def require_run(ctx: ServiceContext, run_id: str) -> RunView:
    """Check the caller may see the run (for subscriptions); returns it without steps."""
    return RunView.of(await _load_run(ctx, run_id))


async def list_steps(
    ctx: ServiceContext, run_ids: Sequence[uuid.UUID]
) -> list[tuple[StepView, ...]]:
    """The steps of several runs in two queries (GraphQL's batch loader): one tuple per id."""
    actor = ctx.require_actor()
    runs = await ctx.session.execute(
        owned_by(select(WorkflowRun.id, WorkflowRun.definition), WorkflowRun, actor).where(
            WorkflowRun.id.in_(run_ids)
        )
    )
    orders = {run_id: _node_order(definition) for run_id, definition in runs}
    rows = await ctx.session.execute(
        owned_by(select(WorkflowStep), WorkflowStep, actor).where(
            WorkflowStep.run_id.in_(list(orders))
        )
    )
    by_run: dict[uuid.UUID, dict[str, WorkflowStep]] = {run_id: {} for run_id in orders}
    for row in rows.scalars():
        by_run[row.run_id][row.node_id] = row
    return [
        tuple(StepView.of(by_run[r][n]) for n in orders.get(r, ()) if n in by_run.get(r, {}))
        for r in run_ids
    ]


async def list_runs(
    ctx: ServiceContext,
    workflow_id: str | None,
    status: str | None,
    page: int | None,
    page_size: int | None,
) -> Page[RunView]:
    """Runs newest first, optionally of one workflow and in one status (steps not included)."""
    actor = ctx.require_actor()
    page, page_size = check_page(page, page_size)
    base = owned_by(select(WorkflowRun), WorkflowRun, actor)
    if workflow_id is not None:
        base = base.where(WorkflowRun.workflow_id == await _workflow_key(ctx, workflow_id))
    if check_status(status) is not None:
        base = base.where(WorkflowRun.status == status)
    total = (await ctx.session.execute(select(func.count()).select_from(base.subquery()))).scalar()
    rows = await ctx.session.execute(
        base.order_by(WorkflowRun.created_at.desc(), WorkflowRun.id)
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    items = tuple(RunView.of(row) for row in rows.scalars())
    return Page(items=items, page=page, page_size=page_size, total=int(total or 0))


def check_status(status: str | None) -> str | None:
    """Validate a run status filter (None means any)."""
    if status is not None and status not in RunStatus.__members__:
        raise ValidationError(f"unknown status {status!r}", fields={"status": "unknown"})
    return status


async def _workflow_key(ctx: ServiceContext, workflow_id: str) -> uuid.UUID:
    """The id of one of the caller's workflows, deleted ones included (their runs remain)."""
    actor = ctx.require_actor()
    key = parse_uuid(workflow_id, "workflow")
    stmt = owned_by(select(Workflow.id), Workflow, actor).where(Workflow.id == key)
    if (await ctx.session.execute(stmt)).scalar_one_or_none() is None:
        raise NotFoundError("workflow not found")
    return key


async def list_events(
    ctx: ServiceContext, run_id: str, after_seq: int | None = 0, limit: int | None = 100
) -> list[EventView]:
    """Stored events with ``seq > after_seq``, in order (None means the default)."""
    run = await _load_run(ctx, run_id)
    return await read_events(ctx, run.id, *check_events_window(after_seq, limit))


def check_events_window(after_seq: int | None, limit: int | None) -> tuple[int, int]:
    """Validate ``afterSeq`` and ``limit`` of an events page; None means the default."""
    after_seq = 0 if after_seq is None else after_seq
    limit = 100 if limit is None else limit
    if after_seq < 0:
        raise ValidationError("afterSeq must be >= 0", fields={"afterSeq": "must be >= 0"})
    if not 1 <= limit <= MAX_EVENTS_PAGE:
        raise ValidationError(
            f"limit must be between 1 and {MAX_EVENTS_PAGE}", fields={"limit": "out of range"}
        )
    return after_seq, limit


async def read_events(
    ctx: ServiceContext, run_id: uuid.UUID, after_seq: int, limit: int
) -> list[EventView]:
    rows = await ctx.session.execute(
        select(WorkflowEvent)
        .where(WorkflowEvent.run_id == run_id, WorkflowEvent.seq > after_seq)
        .order_by(WorkflowEvent.seq)
        .limit(limit)
    )
    return [EventView.of(row) for row in rows.scalars()]


async def cancel_run(ctx: ServiceContext, run_id: str) -> RunView:
    """Cancel a run that has not finished; 409 CONFLICT for a finished one."""
    run = await _load_run(ctx, run_id)
    txn = await load_run_txn(ctx.session, ctx.resources, run.id)
    if RunStatus(txn.run.status) in TERMINAL_RUN:
        raise ConflictError(f"run already {txn.run.status}")
    now = utcnow()
    cancel_open_steps(txn.steps, txn.writer, now)
    finish_run(txn.run, RunStatus.CANCELLED, txn.writer, now)
    await txn.save()
    defer_effects(ctx, txn)
    return run_view(txn.run, txn.steps)


def defer_effects(ctx: ServiceContext, txn: RunTxn) -> None:
    """After ``ctx`` commits: publish the transaction's events and enqueue its steps."""
    tenant_id = txn.run.tenant_id

    async def hook() -> None:
        await after_commit(ctx.resources, tenant_id, txn)

    ctx.on_commit.append(hook)


def _node_order(definition: JSONObject) -> list[str]:
    nodes = definition.get("nodes")
    return (
        [str(node["id"]) for node in nodes if isinstance(node, dict)]
        if isinstance(nodes, list)
        else []
    )


def run_view(run: RunRow, steps: dict[str, StepRow]) -> RunView:
    return rows.run_view(run, steps, _node_order(run.definition))
