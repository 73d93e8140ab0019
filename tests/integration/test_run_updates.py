"""The tenant feed: ``runUpdates`` (GraphQL) and ``WS /ws`` on two API replicas over Redis.

Runs start on replica 1 (its worker is a real ``treadle worker``); the feeds are read on
replica 2, so every update crosses Redis. Tenant B watches the whole time and never sees A's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import TEST_SECRET, make_settings
from tests.support.client import RestApi, unique_email
from tests.support.live import LiveServer, WorkerProcess
from tests.support.ws import GraphQLWs, rest_client, ws_url
from treadle.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PASSWORD = "correct horse battery"
UPDATES = (
    "subscription($w: ID) { runUpdates(workflowId: $w) "
    "{ type runId workflowId status nodeId seq at } }"
)
FIELDS = {"type", "runId", "workflowId", "status", "nodeId", "seq", "at"}


@dataclass
class Tenant:
    token: str
    user_id: str
    tenant_id: str
    workflow_id: str
    other_workflow_id: str


@dataclass
class Replicas:
    one: str
    two: str
    rest: RestApi


def _definition() -> dict[str, Any]:
    nodes = [
        {"id": "wait", "type": "DELAY", "config": {"seconds": 1}},
        {"id": "a", "type": "TRANSFORM", "config": {"output": {"v": 1}}},
    ]
    return {"nodes": nodes, "edges": [{"from": "wait", "to": "a"}]}


@pytest.fixture(scope="module")
def replicas(
    private_pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    settings: Settings = make_settings(
        private_pg_url, tmp_path_factory.mktemp("updates"), redis_url=redis_url
    )
    with (
        LiveServer.api(settings) as one,
        LiveServer.api(settings) as two,
        WorkerProcess(settings),
        rest_client(one.base_url) as rest,
    ):
        yield Replicas(one.base_url, two.base_url, rest)


def _tenant(rest: RestApi, name: str) -> Tenant:
    body = rest.register(name, unique_email(name.lower()), PASSWORD, name)
    token = body["token"]
    first = rest.create_workflow(token, name="first", definition=_definition())
    second = rest.create_workflow(token, name="second", definition=_definition())
    return Tenant(token, body["user"]["id"], body["tenant"]["id"], first["id"], second["id"])


async def _execute(rest: RestApi, tenant: Tenant, workflow_id: str) -> str:
    run = await asyncio.to_thread(rest.execute, tenant.token, workflow_id)
    return str(run["id"])


async def _updates_until_end(ws: GraphQLWs, op_id: str, run_id: str) -> list[dict[str, Any]]:
    """runUpdates messages until ``run_id``'s RUN_COMPLETED."""
    got: list[dict[str, Any]] = []
    while not any(u["runId"] == run_id and u["type"] == "RUN_COMPLETED" for u in got):
        message = await ws.next_for(op_id, seconds=30)
        assert message["type"] == "next", message
        got.append(message["payload"]["data"]["runUpdates"])
    return got


@contextlib.asynccontextmanager
async def _feed(base_url: str, token: str) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(base_url, f"/ws?token={token}"), proxy=None) as conn:
        yield conn


async def _recv(conn: ClientConnection, seconds: float = 30) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(conn.recv(), seconds))
    return message


async def _feed_until(
    conn: ClientConnection, done: Any, seconds: float = 30
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while not done(got):
        got.append(await _recv(conn, deadline - time.monotonic()))
    return got


def _status_story(updates: list[dict[str, Any]], run_id: str) -> list[tuple[Any, ...]]:
    return [(u["type"], u["nodeId"], u["status"]) for u in updates if u["runId"] == run_id]


STORY = [
    ("RUN_CREATED", None, "PENDING"),
    ("RUN_STARTED", None, "RUNNING"),
    ("STEP_STARTED", "wait", "RUNNING"),
    ("STEP_COMPLETED", "wait", "COMPLETED"),
    ("STEP_STARTED", "a", "RUNNING"),
    ("STEP_COMPLETED", "a", "COMPLETED"),
    ("RUN_COMPLETED", None, "COMPLETED"),
]


async def test_run_updates_cross_replicas_and_never_cross_tenants(replicas: Replicas) -> None:
    a, b = _tenant(replicas.rest, "Ada"), _tenant(replicas.rest, "Bea")
    async with (
        GraphQLWs.connect(replicas.two, a.token) as ws_a,
        GraphQLWs.connect(replicas.two, b.token) as ws_b,
    ):
        all_a = await ws_a.subscribe(UPDATES, {})
        only_first = await ws_a.subscribe(UPDATES, {"w": a.workflow_id})
        all_b = await ws_b.subscribe(UPDATES, {})
        await asyncio.sleep(0.5)  # the subscriptions attach
        other = await _execute(replicas.rest, a, a.other_workflow_id)
        run = await _execute(replicas.rest, a, a.workflow_id)
        seen = await _updates_until_end(ws_a, all_a, run)
        filtered = await _updates_until_end(ws_a, only_first, run)
        # B's feed is alive (it sees B's own run) and never saw any of A's.
        run_b = await _execute(replicas.rest, b, b.workflow_id)
        seen_b = await _updates_until_end(ws_b, all_b, run_b)
    assert _status_story(seen, run) == STORY
    assert all(set(u) == FIELDS for u in seen)
    assert {u["workflowId"] for u in seen if u["runId"] == run} == {a.workflow_id}
    assert [u["seq"] for u in seen if u["runId"] == run] == list(range(1, len(STORY) + 1))
    assert {u["runId"] for u in filtered} == {run}  # the other workflow's run is filtered out
    assert other in {u["runId"] for u in seen}
    assert {u["runId"] for u in seen_b} == {run_b}
    assert _status_story(seen_b, run_b) == STORY


async def test_ws_streams_updates_and_subscribed_runs_for_its_tenant_only(
    replicas: Replicas,
) -> None:
    a, b = _tenant(replicas.rest, "Ann"), _tenant(replicas.rest, "Ben")
    async with _feed(replicas.two, a.token) as feed_a, _feed(replicas.two, b.token) as feed_b:
        await asyncio.sleep(0.5)
        run = await _execute(replicas.rest, a, a.workflow_id)
        await feed_a.send(json.dumps({"subscribe": run}))
        await feed_b.send(json.dumps({"subscribe": run}))  # A's run: NOT_FOUND for B
        got = await _feed_until(
            feed_a, lambda got: any(m["type"] == "complete" for m in got), seconds=30
        )
        refused = await _recv(feed_b)
        run_b = await _execute(replicas.rest, b, b.workflow_id)
        got_b = await _feed_until(
            feed_b, lambda got: any(m.get("type") == "RUN_COMPLETED" for m in got)
        )
    updates = [m for m in got if m["type"] not in {"event", "complete"}]
    events = [m["event"] for m in got if m["type"] == "event"]
    stored = await asyncio.to_thread(replicas.rest.events, a.token, run)
    assert [e["seq"] for e in events] == [e["seq"] for e in stored]
    assert [e["type"] for e in events] == [e["type"] for e in stored]
    assert all(set(u) == FIELDS for u in updates)
    # Updates of the run up to its end arrive (the last ones may trail its events' completion).
    assert _status_story(updates, run) == STORY[: len(_status_story(updates, run))]
    assert refused == {
        "type": "error",
        "code": "NOT_FOUND",
        "message": refused["message"],
        "runId": run,
    }
    assert {m["runId"] for m in got_b} == {run_b}
    assert _status_story(got_b, run_b) == STORY


async def test_ws_refuses_a_bad_token_and_ends_when_the_token_expires(replicas: Replicas) -> None:
    a = _tenant(replicas.rest, "Abe")
    async with _feed(replicas.two, "not-a-jwt") as conn:
        message = await _recv(conn)
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(conn)
    assert message["type"] == "error"
    assert message["code"] == "UNAUTHENTICATED"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    now = int(time.time())
    claims = {"sub": a.user_id, "tid": a.tenant_id, "role": "ADMIN", "iat": now, "exp": now + 2}
    short = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    async with _feed(replicas.two, short) as conn:
        message = await _recv(conn, seconds=10)  # nothing happens in this tenant: the expiry
        with pytest.raises(ConnectionClosed) as closed:
            await _recv(conn)
    assert message["code"] == "UNAUTHENTICATED"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
