"""Cron firing at the service level, with the clock passed in: downtime is not replayed
(unless ``catchUp``: the latest missed tick, once), concurrent firers start one run per tick,
and a deleted workflow fires nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from taskiq import InMemoryBroker

from tests.conftest import make_settings
from treadle.models import WorkflowRun, WorkflowTrigger
from treadle.resources import Resources
from treadle.security import Actor, Role
from treadle.services import auth, workflows
from treadle.services.context import open_service_context
from treadle.services.cron import fire_due_triggers
from treadle.tasks.broker import open_runtime
from treadle.tenancy import SYSTEM, transaction

# Each test deletes its workflow at the end: a clock far ahead would fire leftovers too.


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(
        "sqlite_url" if request.param == "sqlite" else "private_pg_url"
    )
    return url


@pytest.fixture
async def resources(database_url: str, tmp_path: Path) -> AsyncIterator[Resources]:
    async with open_runtime(make_settings(database_url, tmp_path), embedded=True) as res:
        yield res
        assert isinstance(res.broker, InMemoryBroker)
        await res.broker.wait_all()  # the fired runs execute in-process: let them finish


async def _workflow(resources: Resources, catch_up: bool = False) -> tuple[Actor, str]:
    view = await auth.register(
        resources,
        {
            "tenantName": "Cron",
            "email": f"cron-{uuid.uuid4().hex[:8]}@example.test",
            "password": "long enough password",
            "name": "Cron",
        },
        client_ip=None,
    )
    actor = Actor(view.user.id, view.tenant.id, Role.ADMIN)
    trigger = {"id": "q", "type": "cron", "schedule": "*/15 * * * *", "catchUp": catch_up}
    definition = {
        "nodes": [{"id": "a", "type": "TRANSFORM", "config": {"output": 1}}],
        "triggers": [trigger],
    }
    async with open_service_context(resources, actor) as ctx:
        workflow = await workflows.create_workflow(ctx, {"name": "q", "definition": definition})
    return actor, str(workflow.id)


async def _delete(resources: Resources, actor: Actor, workflow_id: str) -> None:
    async with open_service_context(resources, actor) as ctx:
        await workflows.delete_workflow(ctx, workflow_id)


async def _next_at(resources: Resources, workflow_id: str) -> datetime:
    async with transaction(resources, SYSTEM) as session:
        found = await session.execute(
            select(WorkflowTrigger.next_at).where(
                WorkflowTrigger.workflow_id == uuid.UUID(workflow_id)
            )
        )
        moment = found.scalar_one()
    assert moment is not None
    return moment


async def _ticks(resources: Resources, workflow_id: str) -> list[str]:
    async with transaction(resources, SYSTEM) as session:
        keys = await session.execute(
            select(WorkflowRun.idempotency_key).where(
                WorkflowRun.workflow_id == uuid.UUID(workflow_id)
            )
        )
        return sorted(str(key).removeprefix("cron:q:") for key in keys.scalars())


async def test_a_tick_fires_once_even_with_concurrent_firers(resources: Resources) -> None:
    actor, workflow_id = await _workflow(resources)
    first = await _next_at(resources, workflow_id)
    assert first.minute % 15 == 0
    assert first.second == 0
    assert await fire_due_triggers(resources, now=first - timedelta(seconds=1)) == 0
    now = first + timedelta(seconds=2)
    started = await asyncio.gather(*(fire_due_triggers(resources, now=now) for _ in range(5)))
    assert sum(started) == 1
    assert await fire_due_triggers(resources, now=now) == 0
    assert await _ticks(resources, workflow_id) == [first.isoformat()]
    assert await _next_at(resources, workflow_id) == first + timedelta(minutes=15)
    await _delete(resources, actor, workflow_id)


@pytest.mark.parametrize("catch_up", [False, True])
async def test_downtime_is_not_replayed_unless_catch_up(
    resources: Resources, catch_up: bool
) -> None:
    actor, workflow_id = await _workflow(resources, catch_up=catch_up)
    first = await _next_at(resources, workflow_id)
    back = first + timedelta(hours=2, minutes=5)  # 8 ticks missed; none within the grace
    started = await fire_due_triggers(resources, now=back)
    latest_missed = first + timedelta(hours=2)
    expected = [latest_missed.isoformat()] if catch_up else []
    assert started == len(expected)
    assert await _ticks(resources, workflow_id) == expected
    assert await _next_at(resources, workflow_id) == first + timedelta(hours=2, minutes=15)
    # Running again: the ticks from here on fire as usual.
    on_time = first + timedelta(hours=2, minutes=15, seconds=1)
    assert await fire_due_triggers(resources, now=on_time) == 1
    await _delete(resources, actor, workflow_id)


async def test_a_deleted_workflow_fires_nothing(resources: Resources) -> None:
    actor, workflow_id = await _workflow(resources)
    first = await _next_at(resources, workflow_id)
    await _delete(resources, actor, workflow_id)
    assert await fire_due_triggers(resources, now=first + timedelta(seconds=1)) == 0
    assert await _ticks(resources, workflow_id) == []
