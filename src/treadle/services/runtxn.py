"""One transaction over one run: its row locked, its steps loaded, effects after commit."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from treadle.db import AsyncSession
from treadle.engine.dagcache import DagKey
from treadle.models import WorkflowRun, WorkflowStep
from treadle.queue import StepRef
from treadle.services.effects import Effects, flush
from treadle.services.events import EventWriter
from treadle.services.progress import load_steps, lock_run
from treadle.tenancy import transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RunTxn:
    session: AsyncSession
    run: WorkflowRun
    steps: dict[str, WorkflowStep]
    writer: EventWriter
    dispatch: list[uuid.UUID] = field(default_factory=list)
    # Steps to enqueue at a set time by this process (retries, short delays); the reaper is the
    # backstop when this process dies first.
    timers: list[tuple[uuid.UUID, datetime]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def open_run_txn(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID
) -> AsyncIterator[RunTxn]:
    """Lock the run, load its steps; after commit publish the events and enqueue the steps."""
    async with transaction(resources, tenant_id) as session:
        txn = await load_run_txn(session, resources, run_id)
        yield txn
    await after_commit(resources, txn.run.tenant_id, txn)


def dag_key(run: WorkflowRun) -> DagKey:
    """The key of the run's definition in ``Resources.dags``: its workflow and version."""
    return (run.workflow_id, run.workflow_version)


async def load_run_txn(session: AsyncSession, resources: Resources, run_id: uuid.UUID) -> RunTxn:
    """Within ``session``'s transaction: lock the run and load its steps."""
    run = await lock_run(session, run_id, postgres=resources.is_postgres)
    return RunTxn(session, run, await load_steps(session, run_id), EventWriter(run, session))


async def after_commit(resources: Resources, tenant_id: uuid.UUID, txn: RunTxn) -> None:
    """Publish and enqueue; failures here delay work (the reaper repeats it) but lose nothing."""
    views = txn.writer.views()
    resources.metrics.observe_events(
        tenant_id, views, {node: row.type for node, row in txn.steps.items()}
    )
    run_id = txn.run.id
    effects = Effects()
    effects.events(tenant_id, views, txn.run.workflow_id)
    effects.sends.extend(StepRef(s, run_id, tenant_id) for s in txn.dispatch)
    await flush(resources, effects)
    for step_id, at in txn.timers:
        resources.timers.schedule(at, StepRef(step_id, run_id, tenant_id))
