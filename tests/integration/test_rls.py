"""The tenant wall in PostgreSQL: row-level security holds even when a query forgets its filter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from tests.conftest import make_settings
from treadle.models import Workflow
from treadle.resources import Resources
from treadle.security import Actor, Role
from treadle.services import auth, workflows
from treadle.services.context import open_service_context
from treadle.tasks.broker import open_runtime
from treadle.tenancy import SYSTEM, transaction

pytestmark = pytest.mark.postgres

TENANT_TABLES = [
    "users",
    "workflows",
    "workflow_runs",
    "workflow_steps",
    "workflow_events",
    "workflow_triggers",
]
DAG = {"nodes": [{"id": "a", "type": "TRANSFORM", "config": {"output": {}}}], "edges": []}


@pytest.fixture
async def resources(pg_url: str, tmp_path: Path) -> AsyncIterator[Resources]:
    async with open_runtime(make_settings(pg_url, tmp_path), embedded=True) as res:
        yield res


async def _tenant(resources: Resources, name: str) -> Actor:
    payload = {
        "tenantName": name,
        "email": f"{name}-{uuid.uuid4().hex[:8]}@example.test",
        "password": "long enough password",
        "name": name,
    }
    view = await auth.register(resources, payload, client_ip=None)
    actor = Actor(view.user.id, view.tenant.id, Role.ADMIN)
    async with open_service_context(resources, actor) as ctx:
        await workflows.create_workflow(ctx, {"name": f"{name} flow", "definition": DAG})
    return actor


async def test_every_tenant_table_forces_rls_and_the_app_role_cannot_bypass(
    resources: Resources,
) -> None:
    async with transaction(resources, SYSTEM) as session:
        rows = await session.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname = ANY(:names)"
            ),
            {"names": TENANT_TABLES},
        )
        flags = {name: (rls, forced) for name, rls, forced in rows}
        role = (
            await session.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    assert flags == dict.fromkeys(TENANT_TABLES, (True, True))
    assert tuple(role) == (False, False)


async def test_unscoped_query_sees_only_the_current_tenant(resources: Resources) -> None:
    alice, bob = await _tenant(resources, "alice"), await _tenant(resources, "bob")
    async with transaction(resources, alice.tenant_id) as session:
        # Deliberately no tenant filter: the database adds it.
        owners = set((await session.execute(select(Workflow.tenant_id))).scalars())
        renamed = await session.execute(update(Workflow).values(name="renamed by alice"))
    assert owners == {alice.tenant_id}
    assert renamed.rowcount == 1  # type: ignore[attr-defined]
    async with transaction(resources, bob.tenant_id) as session:
        names = set((await session.execute(select(Workflow.name))).scalars())
    assert names == {"bob flow"}


async def test_no_tenant_named_means_no_rows(resources: Resources) -> None:
    await _tenant(resources, "carol")
    async with resources.sessions() as session, session.begin():
        await session.execute(
            text(
                "SELECT set_config('role', 'treadle_app', true), "
                "set_config('treadle.tenant_id', '', true)"
            )
        )
        count = (await session.execute(select(func.count()).select_from(Workflow))).scalar()
    assert count == 0


async def _smuggle(resources: Resources, actor: Actor, victim: Actor) -> None:
    async with transaction(resources, actor.tenant_id) as session:
        session.add(Workflow(tenant_id=victim.tenant_id, name="smuggled", definition=DAG))
        await session.flush()


async def test_writing_another_tenants_row_is_refused(resources: Resources) -> None:
    alice, bob = await _tenant(resources, "dave"), await _tenant(resources, "erin")
    with pytest.raises(DBAPIError, match="row-level security"):
        await _smuggle(resources, alice, bob)


async def test_scope_does_not_leak_to_the_next_transaction(resources: Resources) -> None:
    alice = await _tenant(resources, "frank")
    async with transaction(resources, alice.tenant_id) as session:
        assert (await session.execute(text("SELECT current_user"))).scalar() == "treadle_app"
    async with resources.sessions() as session, session.begin():
        user, tenant = (
            await session.execute(
                text("SELECT current_user, current_setting('treadle.tenant_id', true)")
            )
        ).one()
    assert user != "treadle_app"
    assert not tenant
