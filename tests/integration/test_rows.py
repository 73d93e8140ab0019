"""``rows.lock_and_load`` on PostgreSQL: one statement locks the run and reads its steps, so a
writer that held the lock meanwhile must not leave it reading the steps of before."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import make_settings
from tests.support.client import RestApi, unique_email
from tests.support.live import LiveServer
from treadle.services.rows import lock_and_load
from treadle.settings import Settings
from treadle.tasks.broker import open_runtime
from treadle.tenancy import transaction

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TWO = {
    "nodes": [
        {"id": "a", "type": "TRANSFORM", "config": {"output": 1}},
        {"id": "b", "type": "TRANSFORM", "config": {"output": 2}},
    ],
    "edges": [{"from": "a", "to": "b"}],
}


def _started_run(settings: Settings) -> tuple[uuid.UUID, uuid.UUID]:
    with LiveServer.api(settings) as server, RestApi(server.base_url) as api:
        auth = api.register("Rows", unique_email("rows"), "correct horse battery", "R")
        workflow = api.create_workflow(auth["token"], name="Two", definition=TWO)
        run = api.execute(auth["token"], workflow["id"])  # no worker: the steps stay PENDING
    return uuid.UUID(run["id"]), uuid.UUID(auth["tenant"]["id"])


def test_lock_and_load_reads_steps_written_while_it_waited(
    private_pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(private_pg_url, tmp_path, redis_url=redis_url)
    run_id, tenant_id = _started_run(settings)
    dsn = make_url(private_pg_url).set(drivername="postgresql").render_as_string(False)
    statuses = asyncio.run(_load_behind_a_writer(settings, dsn, run_id, tenant_id))
    assert statuses == {"a": "SKIPPED", "b": "SKIPPED"}


async def _load_behind_a_writer(
    settings: Settings, dsn: str, run_id: uuid.UUID, tenant_id: uuid.UUID
) -> dict[str, str]:
    writer = await asyncpg.connect(dsn)
    try:
        async with open_runtime(settings) as resources:
            txn = writer.transaction()
            await txn.start()
            # What every writer of a run does: hold the run's lock, change steps and the run row.
            await writer.execute("SELECT 1 FROM workflow_runs WHERE id = $1 FOR UPDATE", run_id)
            await writer.execute(
                "UPDATE workflow_steps SET status = 'SKIPPED' WHERE run_id = $1", run_id
            )
            await writer.execute(
                "UPDATE workflow_runs SET last_seq = last_seq + 1 WHERE id = $1", run_id
            )

            async def load() -> dict[str, str]:
                async with transaction(resources, tenant_id) as session:
                    _run, steps = await lock_and_load(session, run_id, postgres=True)
                return {node: row.status for node, row in steps.items()}

            loading = asyncio.create_task(load())
            await asyncio.sleep(0.5)
            assert not loading.done(), "the load did not wait for the run's lock"
            await txn.commit()
            return await loading
    finally:
        await writer.close()
