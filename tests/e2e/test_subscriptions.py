"""Live runs end to end: runEvents over graphql-transport-ws and the SSE alias, on real uvicorn.

Each test runs against embedded mode and against PostgreSQL + Redis + a worker (``server``).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import TEST_SECRET, make_settings
from tests.e2e.conftest import Account, register
from tests.support.client import RestApi
from tests.support.live import LiveServer
from tests.support.ws import GraphQLWs, WsClosedError, follow_run, rest_client
from treadle.migrate import upgrade
from treadle.rest import stream

DELTA = "STEP_OUTPUT_DELTA"
PROMPT = "Tell the story of a loom that weaves the weather for a small town by the sea"


def definition(*nodes: dict[str, Any]) -> dict[str, Any]:
    """A chain of ``nodes`` after a one-second delay (time for a subscriber to attach)."""
    chain = [{"id": "wait", "type": "DELAY", "config": {"seconds": 1}}, *nodes]
    edges = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(chain)]
    return {"nodes": chain, "edges": edges}


def transform(node_id: str) -> dict[str, Any]:
    return {"id": node_id, "type": "TRANSFORM", "config": {"output": {"node": node_id}}}


def comparable(event: dict[str, Any]) -> tuple[Any, ...]:
    created = datetime.fromisoformat(event["createdAt"].replace("Z", "+00:00"))
    return event["id"], event["seq"], event["type"], event["nodeId"], event["data"], created


@pytest.fixture
def rest(server: str) -> Iterator[RestApi]:
    with rest_client(server) as client:
        yield client


@pytest.fixture
def owner(rest: RestApi) -> Account:
    return register(rest, "Live")


def start(rest: RestApi, account: Account, *nodes: dict[str, Any]) -> str:
    workflow = rest.create_workflow(account.token, name="Live", definition=definition(*nodes))
    return str(rest.execute(account.token, workflow["id"])["id"])


async def test_replay_then_live_then_complete(server: str, rest: RestApi, owner: Account) -> None:
    run_id = start(rest, owner, transform("a"), transform("b"))
    live = await follow_run(server, owner.token, run_id)
    stored = rest.events(owner.token, run_id)
    assert live.completed
    assert not live.errors
    assert [comparable(e) for e in live.events] == [comparable(e) for e in stored]
    assert live.seqs == list(range(1, len(stored) + 1))
    assert stored[-1]["type"] == "RUN_COMPLETED"
    # A finished run: the history from any point, then complete; nothing after the end.
    assert (await follow_run(server, owner.token, run_id, after_seq=3)).seqs[0] == 4
    tail = await follow_run(server, owner.token, run_id, after_seq=len(stored))
    assert tail.completed
    assert tail.events == []


async def test_connection_auth(server: str, rest: RestApi, owner: Account) -> None:
    now = int(time.time())
    claims = {"sub": owner.user["id"], "tid": owner.tenant["id"], "role": owner.user["role"]}
    expired = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, TEST_SECRET, "HS256")
    for payload in ({"token": "not-a-jwt"}, {"token": expired}, {}):
        with pytest.raises(WsClosedError) as closed:
            async with GraphQLWs.connect(server, payload=payload):
                pass
        assert closed.value.code == 4403, payload
    run_id = start(rest, owner, transform("a"))
    bearer = {"authorization": f"Bearer {owner.token}"}
    async with GraphQLWs.connect(server, payload=bearer) as ws:
        assert (await ws.collect(await ws.run_events(run_id))).completed
    async with GraphQLWs.connect(server, payload={}, query=f"?token={owner.token}") as ws:
        assert (await ws.collect(await ws.run_events(run_id))).completed
    async with GraphQLWs.connect(server, init=False) as ws:
        await ws.run_events(run_id)  # subscribing before connection_init
        with pytest.raises(WsClosedError) as closed:
            await ws.recv(5)
        assert closed.value.code == 4401


async def test_another_tenants_run_is_an_error_never_events(
    server: str, rest: RestApi, owner: Account
) -> None:
    run_id = start(rest, owner, transform("a"))
    intruder = register(rest, "Intruder")
    for target in (run_id, str(uuid.uuid4()), "not-a-uuid"):
        async with GraphQLWs.connect(server, intruder.token) as ws:
            got = await ws.collect(await ws.run_events(target))
        assert got.events == []
        assert not got.completed
        assert [e["extensions"]["code"] for e in got.errors] == ["NOT_FOUND"]


async def test_streamed_completion_deltas_are_live_only(
    server: str, rest: RestApi, owner: Account
) -> None:
    ai = {"id": "ai", "type": "AI_COMPLETION", "config": {"prompt": PROMPT, "stream": True}}
    run_id = start(rest, owner, ai)
    live = await follow_run(server, owner.token, run_id)
    assert live.completed
    assert not live.errors
    kinds = [(e["type"], e["nodeId"]) for e in live.events]
    done = kinds.index(("STEP_COMPLETED", "ai"))
    deltas = [i for i, (kind, _) in enumerate(kinds) if kind == DELTA]
    assert deltas
    assert max(deltas) < done
    for i in deltas:
        event = live.events[i]
        assert event["id"] is None
        assert event["seq"] is None
        assert event["nodeId"] == "ai"
        assert event["runId"] == run_id
    text = "".join(live.events[i]["data"]["delta"] for i in deltas)
    assert text == live.events[done]["data"]["output"]["text"]
    stored = rest.events(owner.token, run_id, limit=1000)
    assert DELTA not in {e["type"] for e in stored}
    assert live.seqs == [e["seq"] for e in stored]


# --- Server-Sent Events -------------------------------------------------------------------


def read_sse(
    server: str, token: str | None, run_id: str, headers: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Read the stream like ``curl -N`` until the server ends it: (status, events)."""
    all_headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    url = f"{server}/api/runs/{run_id}/stream"
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", url, headers=all_headers, timeout=30) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in response.iter_lines():
            if line == "" and current:
                events.append(current)
                current = {}
            elif line and not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.removeprefix(" ")
    return 200, events


def test_sse_streams_to_completion_and_resumes(server: str, rest: RestApi, owner: Account) -> None:
    run_id = start(rest, owner, transform("a"), transform("b"))
    status, events = read_sse(server, owner.token, run_id)
    assert status == 200
    stored = rest.events(owner.token, run_id)
    assert [json.loads(e["data"]) for e in events] == stored
    assert [e["event"] for e in events] == [e["type"] for e in stored]
    assert [e["id"] for e in events] == [str(e["seq"]) for e in stored]
    status, resumed = read_sse(server, owner.token, run_id, {"Last-Event-ID": "3"})
    assert [int(e["id"]) for e in resumed] == [e["seq"] for e in stored[3:]]
    status, body = read_sse(server, None, run_id)
    assert status == 401
    assert body[0]["error"]["code"] == "UNAUTHENTICATED"
    status, body = read_sse(server, register(rest, "Other").token, run_id)
    assert status == 404
    assert body[0]["error"]["code"] == "NOT_FOUND"


# --- connection limits, on a server of their own ------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("strict")
    url = f"sqlite+aiosqlite:///{path / 'strict.db'}"
    upgrade(url)
    settings = make_settings(
        url,
        path,
        treadle_ws_init_timeout_seconds=0.5,
        treadle_ws_ping_seconds=0.2,
        treadle_max_subscriptions_per_connection=2,
        treadle_max_subscriptions_per_tenant=3,
    )
    with LiveServer.embedded(settings) as server:
        yield server.base_url


async def test_idle_sockets_are_pinged_and_silent_ones_closed(strict_server: str) -> None:
    async with GraphQLWs.connect(strict_server, init=False) as silent:
        with pytest.raises(WsClosedError) as closed:
            await silent.recv(5)
        assert closed.value.code == 4408
    with rest_client(strict_server) as rest:
        account = register(rest, "Idle")
    async with GraphQLWs.connect(strict_server, account.token) as ws:
        with pytest.raises(TimeoutError):
            await ws.recv(1)
        assert ws.pings >= 2  # answered with pongs, and the socket stayed open


async def test_subscriptions_are_bounded_per_connection_and_tenant(strict_server: str) -> None:
    with rest_client(strict_server) as rest:
        account = register(rest, "Busy")
        nodes = [{"id": "wait", "type": "DELAY", "config": {"seconds": 60}}]
        workflow = rest.create_workflow(
            account.token, name="Long", definition={"nodes": nodes, "edges": []}
        )
        run_id = str(rest.execute(account.token, workflow["id"])["id"])
        async with (
            GraphQLWs.connect(strict_server, account.token) as one,
            GraphQLWs.connect(strict_server, account.token) as two,
        ):
            open_ops = [(one, await one.run_events(run_id)), (one, await one.run_events(run_id))]
            for ws, op in open_ops:
                assert (await ws.next_for(op))["type"] == "next"
            third = await one.collect(await one.run_events(run_id))
            assert "limit" in third.errors[0]["message"].lower()
            open_ops.append((two, await two.run_events(run_id)))
            assert (await two.next_for(open_ops[-1][1]))["type"] == "next"
            fourth = await two.collect(await two.run_events(run_id))
            assert [e["extensions"]["code"] for e in fourth.errors] == ["RATE_LIMITED"]
            rest.cancel(account.token, run_id)
            for ws, op in open_ops:
                ended = await ws.collect(op, seconds=10)
                assert ended.completed
                assert ended.events[-1]["type"] == "RUN_CANCELLED"


def _short_token(owner: Account, seconds: int = 2) -> str:
    """A valid token of ``owner`` that runs out in ``seconds``."""
    now = int(time.time())
    claims = {
        "sub": owner.user["id"],
        "tid": owner.tenant["id"],
        "role": "ADMIN",
        "iat": now,
        "exp": now + seconds,
    }
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


async def test_a_token_that_expires_mid_stream_ends_the_subscription(
    server: str, rest: RestApi, owner: Account
) -> None:
    short = _short_token(owner)
    workflow = rest.create_workflow(
        owner.token,
        name="Slow",
        definition={
            "nodes": [{"id": "wait", "type": "DELAY", "config": {"seconds": 4}}, transform("a")],
            "edges": [{"from": "wait", "to": "a"}],
        },
    )
    run_id = rest.execute(owner.token, workflow["id"])["id"]
    async with GraphQLWs.connect(server, short) as ws:
        got = await ws.collect(await ws.run_events(run_id), seconds=20)
    # Events before the expiry arrived; the delay's completion (after it) did not.
    assert got.events
    assert "STEP_COMPLETED" not in {event["type"] for event in got.events}
    assert "RUN_COMPLETED" not in {event["type"] for event in got.events}
    assert [error["extensions"]["code"] for error in got.errors] == ["UNAUTHENTICATED"]


def test_a_token_that_expires_mid_stream_ends_the_sse_stream(
    server: str, rest: RestApi, owner: Account
) -> None:
    short = _short_token(owner)
    workflow = rest.create_workflow(
        owner.token,
        name="Slow SSE",
        definition={
            "nodes": [{"id": "wait", "type": "DELAY", "config": {"seconds": 5}}, transform("a")],
            "edges": [{"from": "wait", "to": "a"}],
        },
    )
    run_id = rest.execute(owner.token, workflow["id"])["id"]
    status, events = read_sse(server, short, run_id)
    assert status == 200
    # The quiet wait outlived the token: the stream ended with an error, not the run's end.
    assert events[-1]["event"] == "error"
    assert json.loads(events[-1]["data"])["error"]["code"] == "UNAUTHENTICATED"
    assert "RUN_COMPLETED" not in {event["event"] for event in events}
    assert events[0]["event"] == "RUN_CREATED"


def test_sse_streams_of_one_run_share_each_events_encoding(
    server: str, rest: RestApi, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = start(rest, owner, transform("a"))
    first = read_sse(server, owner.token, run_id)[1]
    encoded: list[object] = []
    original = stream._encode

    def counting(item: Any) -> Any:
        encoded.append(item)
        return original(item)

    monkeypatch.setattr(stream, "_encode", counting)
    for _ in range(5):  # the API runs in this process: count its encodings
        assert read_sse(server, owner.token, run_id)[1] == first
    assert encoded == []  # every stored event was encoded once, by the first stream
