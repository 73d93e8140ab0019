"""One Alembic history for SQLite and PostgreSQL, with no drift from the models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from tests.support.services import PG_URL, create_pg_database, drop_pg_database
from treadle.db import build_null_engine
from treadle.migrate import alembic_config, downgrade, upgrade
from treadle.models import Base

TABLES = {"tenants", "users", "workflows", "workflow_runs", "workflow_steps", "workflow_events"}


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_server_default": True, "render_as_batch": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _check(url: str) -> tuple[list[object], set[str]]:
    engine = build_null_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_diff), await conn.run_sync(_tables)
    finally:
        await engine.dispose()


def _roundtrip(url: str) -> None:
    upgrade(url)
    diff, tables = asyncio.run(_check(url))
    assert diff == [], f"models and migrations drift: {diff}"
    assert tables >= TABLES
    downgrade(url, "base")
    _, tables = asyncio.run(_check(url))
    assert not TABLES & tables
    upgrade(url)
    command.check(alembic_config(url))  # raises when autogenerate would write anything


def test_sqlite_upgrade_check_downgrade(tmp_path: Path) -> None:
    _roundtrip(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_check_downgrade() -> None:
    if not PG_URL:
        if os.environ.get("TREADLE_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("PostgreSQL required")
        pytest.skip("PostgreSQL not configured")
    url = asyncio.run(create_pg_database(PG_URL, f"treadle_migrations_{os.getpid()}"))
    try:
        _roundtrip(url)
    finally:
        asyncio.run(drop_pg_database(PG_URL, url))
