"""APPROVAL across real worker deaths: a waiting approval holds no worker and no lease, so a
SIGKILL of every worker loses nothing; decisions (REST and GraphQL) and the durable timeout
carry on once a new worker starts."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.e2e.test_approval import resolve
from tests.integration.test_workers import (  # noqa: F401 - the fixtures are used by name
    Cluster,
    cluster,
    step_rows,
    transform,
)
from tests.support.client import GraphQLApi

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _flow(deployment: Cluster, config: dict[str, Any]) -> str:
    nodes = [
        {"id": "approve", "type": "APPROVAL", "config": config},
        transform("after", {"approved": "{{ steps.approve.output.approved }}"}),
    ]
    return deployment.flow(nodes, [{"from": "approve", "to": "after"}])


def _waiting(deployment: Cluster, run_id: str) -> bool:
    return any(e["type"] == "STEP_WAITING" for e in deployment.events(run_id))


def test_approvals_survive_a_worker_sigkill_and_resolve_by_both_apis(
    cluster: Cluster,  # noqa: F811 - the fixture imported above
) -> None:
    worker = cluster.worker()
    manual = _flow(cluster, {"prompt": "ship it?"})
    timed = _flow(cluster, {"prompt": "ship it?", "timeoutSeconds": 6, "onTimeout": "approve"})
    by_rest, by_graphql, by_timer = (
        cluster.execute(manual),
        cluster.execute(manual),
        cluster.execute(timed),
    )
    for run_id in (by_rest, by_graphql, by_timer):
        cluster.wait_until(f"{run_id} to wait", lambda r=run_id: _waiting(cluster, r), 30)
    killed_at = time.monotonic()
    worker.signal(signal.SIGKILL)
    worker.wait(10)

    # No worker is alive: what waits is only rows, with a wake time and no lease.
    for run_id in (by_rest, by_graphql):
        row = next(r for r in step_rows(cluster.settings, run_id) if r["node_id"] == "approve")
        assert (row["status"], row["lease_until"]) == ("RUNNING", None)
        assert row["wake_at"] is not None
    resolve(cluster.api, cluster.token, by_rest, "approve", True, "via REST")
    graphql = GraphQLApi(str(cluster.api.http.base_url))
    try:
        resolve(graphql, cluster.token, by_graphql, "approve", False, "via GraphQL")
    finally:
        graphql.http.close()
    assert cluster.step(by_rest, "after")["status"] == "PENDING"  # no worker to run it yet

    time.sleep(max(0.0, 6.5 - (time.monotonic() - killed_at)))  # the timeout passes meanwhile
    cluster.worker()
    results = {run_id: cluster.wait_run(run_id) for run_id in (by_rest, by_graphql, by_timer)}
    assert all(run["status"] == "COMPLETED" for run in results.values()), results

    def output(run_id: str, node: str) -> Any:
        return next(s for s in results[run_id]["steps"] if s["nodeId"] == node)["output"]

    assert output(by_rest, "approve")["comment"] == "via REST"
    assert output(by_rest, "after") == {"approved": True}
    assert output(by_graphql, "approve")["comment"] == "via GraphQL"
    assert output(by_graphql, "after") == {"approved": False}
    assert output(by_timer, "approve")["timedOut"] is True
    assert output(by_timer, "after") == {"approved": True}
    for run_id in (by_rest, by_graphql, by_timer):
        events = cluster.events(run_id)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert sum(e["type"] == "STEP_WAITING" for e in events) == 1
