"""Cron triggers fired by three real ``treadle worker`` processes at once: every tick starts
exactly one run (no duplicate, no tick skipped while they run), and a deleted workflow fires
nothing more."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from tests.integration.test_workers import (  # noqa: F401 - the fixture is used by name
    Cluster,
    cluster,
    db_fetch,
    transform,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

TICKS = 8


def _runs(deployment: Cluster, workflow_id: str) -> list[dict[str, object]]:
    return db_fetch(
        deployment.settings,
        "SELECT id, idempotency_key, created_at, status FROM workflow_runs "
        "WHERE workflow_id = $1 ORDER BY created_at",
        uuid.UUID(workflow_id),
    )


def _tick(key: object) -> datetime:
    prefix = "cron:everysecond:"
    assert isinstance(key, str)
    assert key.startswith(prefix), key
    return datetime.fromisoformat(key.removeprefix(prefix))


def test_three_workers_fire_each_tick_once_and_stop_at_delete(
    cluster: Cluster,  # noqa: F811 - the fixture imported above
) -> None:
    for _ in range(3):
        cluster.worker()
    definition = {
        "nodes": [transform("echo", {"got": "{{ input.n }}"})],
        "edges": [],
        "triggers": [
            {"id": "everysecond", "type": "cron", "schedule": "* * * * * *", "input": {"n": 7}}
        ],
    }
    workflow_id = str(
        cluster.api.create_workflow(cluster.token, name="Tick", definition=definition)["id"]
    )
    cluster.wait_until(f"{TICKS} ticks", lambda: len(_runs(cluster, workflow_id)) >= TICKS, 60)
    cluster.api.delete_workflow(cluster.token, workflow_id)
    (row,) = db_fetch(
        cluster.settings, "SELECT deleted_at FROM workflows WHERE id = $1", uuid.UUID(workflow_id)
    )
    deleted_at: datetime = row["deleted_at"]
    cluster.wait_until(  # what was started before the delete finishes
        "the runs to finish",
        lambda: all(r["status"] == "COMPLETED" for r in _runs(cluster, workflow_id)),
        60,
    )
    # Several reaper passes of three workers after the delete: nothing more may start.
    cluster.wait_until("3 s to pass", lambda: _later(deleted_at, 3), 10)
    runs = _runs(cluster, workflow_id)
    ticks = sorted(_tick(r["idempotency_key"]) for r in runs)
    assert len(ticks) == len(set(ticks)), "a tick started two runs"
    expected = [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))]
    assert ticks == expected, "a tick was skipped while the workers ran"
    assert all(r["created_at"] < deleted_at for r in runs), "a run started after the delete"
    assert max(ticks) <= deleted_at
    outputs = {
        str(step["output"])
        for step in db_fetch(
            cluster.settings,
            "SELECT output FROM workflow_steps WHERE run_id = ANY($1::uuid[])",
            [r["id"] for r in runs],
        )
    }
    assert outputs == {'{"got": 7}'}
    fired_by = [
        path.name
        for path in sorted(cluster.logs.glob("worker-*.log"))
        if "cron trigger everysecond fired" in path.read_text(errors="replace")
    ]
    assert fired_by, cluster.log_tail()


def _later(moment: datetime, seconds: float) -> bool:
    return datetime.now(moment.tzinfo) >= moment + timedelta(seconds=seconds)
