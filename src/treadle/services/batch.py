"""Reads for a whole page of parents at once: GraphQL's DataLoaders use these so that a page
of workflows or runs costs a fixed number of queries, not one per parent.

Invariants: each function takes the parents' ids and returns one result per id, in the order
given; every query is scoped to the caller's tenant, so an id of another tenant gets an empty
result, never its rows.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select

from treadle.models import WorkflowEvent, WorkflowRun
from treadle.services.context import ServiceContext, owned_by
from treadle.services.runs import check_events_window, check_status
from treadle.services.views import EventView, Page, RunView
from treadle.services.workflows import check_page


async def list_runs_of_workflows(
    ctx: ServiceContext,
    workflow_ids: Sequence[uuid.UUID],
    status: str | None,
    page: int | None,
    page_size: int | None,
) -> list[Page[RunView]]:
    """The same page of runs (newest first) of each workflow, in two queries."""
    actor = ctx.require_actor()
    page, page_size = check_page(page, page_size)
    filters: list[ColumnElement[bool]] = [WorkflowRun.workflow_id.in_(workflow_ids)]
    if check_status(status) is not None:
        filters.append(WorkflowRun.status == status)
    counted = owned_by(select(WorkflowRun.workflow_id), WorkflowRun, actor).add_columns(
        func.count()
    )
    totals = await ctx.session.execute(counted.where(*filters).group_by(WorkflowRun.workflow_id))
    total_of: dict[uuid.UUID, int] = {workflow_id: int(n) for workflow_id, n in totals.all()}
    position = func.row_number().over(
        partition_by=WorkflowRun.workflow_id,
        order_by=(WorkflowRun.created_at.desc(), WorkflowRun.id),
    )
    ranked = (
        owned_by(select(WorkflowRun.id, position.label("position")), WorkflowRun, actor)
        .where(*filters)
        .subquery()
    )
    skip = (page - 1) * page_size
    rows = await ctx.session.execute(
        select(WorkflowRun)
        .join(ranked, WorkflowRun.id == ranked.c.id)
        .where(ranked.c.position > skip, ranked.c.position <= skip + page_size)
        .order_by(ranked.c.position)
    )
    items: dict[uuid.UUID, list[RunView]] = defaultdict(list)
    for run in rows.scalars():
        items[run.workflow_id].append(RunView.of(run))
    return [
        Page(items=tuple(items[w]), page=page, page_size=page_size, total=total_of.get(w, 0))
        for w in workflow_ids
    ]


async def list_events_of_runs(
    ctx: ServiceContext, run_ids: Sequence[uuid.UUID], after_seq: int | None, limit: int | None
) -> list[list[EventView]]:
    """The same window of stored events (``seq > after_seq``, at most ``limit``) of each run,
    in one query."""
    actor = ctx.require_actor()
    after_seq, limit = check_events_window(after_seq, limit)
    position = func.row_number().over(partition_by=WorkflowEvent.run_id, order_by=WorkflowEvent.seq)
    ranked = (
        owned_by(select(WorkflowEvent.id, position.label("position")), WorkflowEvent, actor)
        .where(WorkflowEvent.run_id.in_(run_ids), WorkflowEvent.seq > after_seq)
        .subquery()
    )
    rows = await ctx.session.execute(
        select(WorkflowEvent)
        .join(ranked, WorkflowEvent.id == ranked.c.id)
        .where(ranked.c.position <= limit)
        .order_by(WorkflowEvent.run_id, WorkflowEvent.seq)
    )
    events: dict[uuid.UUID, list[EventView]] = defaultdict(list)
    for event in rows.scalars():
        events[event.run_id].append(EventView.of(event))
    return [events[run_id] for run_id in run_ids]
