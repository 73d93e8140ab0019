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
from treadle.queue import StepRef
from treadle.services.effects import Effects, flush
from treadle.services.events import EventWriter
from treadle.services.rows import RunRow, StepRow, lock_and_load, write
from treadle.tenancy import transaction

if TYPE_CHECKING:
    from treadle.resources import Resources

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RunTxn:
    session: AsyncSession
    run: RunRow
    steps: dict[str, StepRow]
    writer: EventWriter
    postgres: bool
    dispatch: list[uuid.UUID] = field(default_factory=list)
    # Steps to enqueue at a set time by this process (retries, short delays); the reaper is the
    # backstop when this process dies first.
    timers: list[tuple[uuid.UUID, datetime]] = field(default_factory=list)

    async def save(self) -> None:
        """Write what changed (run, steps, new events) in the transaction; safe to repeat."""
        events = self.writer.take_pending()
        await write(self.session, self.run, self.steps, events, postgres=self.postgres)


@contextlib.asynccontextmanager
async def open_run_txn(
    resources: Resources, tenant_id: uuid.UUID, run_id: uuid.UUID
) -> AsyncIterator[RunTxn]:
    """Lock the run, load its steps; after commit publish the events and enqueue the steps."""
    async with transaction(resources, tenant_id) as session:
        txn = await load_run_txn(session, resources, run_id)
        yield txn
        await txn.save()
    await after_commit(resources, txn.run.tenant_id, txn)


def dag_key(run: RunRow) -> DagKey:
    """The key of the run's definition in ``Resources.dags``: its workflow and version."""
    return (run.workflow_id, run.workflow_version)


async def load_run_txn(session: AsyncSession, resources: Resources, run_id: uuid.UUID) -> RunTxn:
    """Within ``session``'s transaction: lock the run and load its steps; the caller stores
    its changes with ``RunTxn.save`` before the transaction commits."""
    postgres = resources.is_postgres
    run, steps = await lock_and_load(session, run_id, postgres=postgres)
    return RunTxn(session, run, steps, EventWriter(run), postgres)


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
