"""runEvents subscribers of one run share one execution per event and document, on real uvicorn.

The API runs in this process (a uvicorn thread), so counting ``RunEvent.from_item`` (the root
value built for each execution of the selection set) counts executions, counting
``fanout._encode`` counts serialisations, and counting ``fanout.text_frame`` counts the
websocket frames built for the direct write path.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Account, register
from tests.support.client import RestApi
from tests.support.ws import Collected, GraphQLWs, rest_client
from treadle.resolvers import fanout
from treadle.schema.types import RunEvent

SOCKETS = 10
PER_SOCKET = 10  # 100 subscribers
SLIM = "subscription S($r: ID!) { runEvents(runId: $r) { seq type } }"
WIDE = "subscription W($r: ID!) { runEvents(runId: $r) { id seq type nodeId data createdAt } }"


@pytest.fixture
def rest(server: str) -> Iterator[RestApi]:
    with rest_client(server) as client:
        yield client


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = RunEvent.from_item.__func__  # type: ignore[attr-defined]

    def counting(cls: type[RunEvent], item: Any) -> RunEvent:
        calls.append(1)
        result: RunEvent = original(cls, item)
        return result

    monkeypatch.setattr(RunEvent, "from_item", classmethod(counting))
    return calls


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many payloads were serialised and websocket frames built."""
    counts = {"encoded": 0, "frames": 0, "inline": 0}
    encode, frame, inline = fanout._encode, fanout.text_frame, fanout.InlineSink.__call__

    def counting_encode(result: Any) -> str:
        counts["encoded"] += 1
        return encode(result)

    def counting_frame(payload: bytes) -> bytes:
        counts["frames"] += 1
        return frame(payload)

    def counting_inline(self: fanout.InlineSink, item: Any) -> bool:
        written = inline(self, item)
        counts["inline"] += written
        return written

    monkeypatch.setattr(fanout.InlineSink, "__call__", counting_inline)
    monkeypatch.setattr(fanout, "_encode", counting_encode)
    monkeypatch.setattr(fanout, "text_frame", counting_frame)
    return counts


def _start(rest: RestApi, account: Account) -> str:
    chain = [{"id": "wait", "type": "DELAY", "config": {"seconds": 2}}]
    chain += [
        {"id": f"t{i}", "type": "TRANSFORM", "config": {"output": {"i": i}}} for i in range(3)
    ]
    edges = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(chain)]
    workflow = rest.create_workflow(
        account.token, name="Shared", definition={"nodes": chain, "edges": edges}
    )
    return str(rest.execute(account.token, workflow["id"])["id"])


async def test_each_event_is_executed_once_per_distinct_document(
    server: str, rest: RestApi, executions: list[int], built: dict[str, int]
) -> None:
    owner = register(rest, "Shared")
    run_id = _start(rest, owner)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(GraphQLWs.connect(server, owner.token))
            for _ in range(SOCKETS)
        ]
        ops: list[tuple[GraphQLWs, str, str]] = []
        for n, ws in enumerate(sockets):
            for k in range(PER_SOCKET):
                query = SLIM if (n * PER_SOCKET + k) % 2 else WIDE
                ops.append((ws, await ws.subscribe(query, {"r": run_id}), query))
        got: list[Collected] = []
        for ws, op_id, _ in ops:  # one reader per socket at a time keeps the inbox simple
            got.append(await ws.collect(op_id, seconds=60))
    stored = rest.events(owner.token, run_id)
    assert stored[-1]["type"] == "RUN_COMPLETED"
    for (_, _, query), one in zip(ops, got, strict=True):
        assert one.completed, one.errors
        assert [event["seq"] for event in one.events] == [e["seq"] for e in stored]
        if query == WIDE:
            assert [event["id"] for event in one.events] == [e["id"] for e in stored]
    # 100 subscribers, 2 documents: each event executed twice in all, not 100 times.
    assert len(executions) == 2 * len(stored)
    assert built["encoded"] == 2 * len(stored)  # and serialised twice
    # Frames are built once per document and operation id ("1".."10" on each socket, each id
    # always with the same document), then written as they are to every socket.
    assert 0 < built["frames"] <= PER_SOCKET * len(stored)
    assert built["inline"] > 0  # caught-up subscribers got live events in the bus's call


async def test_documents_the_shared_path_does_not_take_still_work(
    server: str, rest: RestApi, executions: list[int]
) -> None:
    owner = register(rest, "Fragments")
    run_id = _start(rest, owner)
    fragment = (
        "subscription($r: ID!) { runEvents(runId: $r) { ...E } } "
        "fragment E on RunEvent { seq type }"
    )
    async with GraphQLWs.connect(server, owner.token) as ws:
        plain = await ws.collect(await ws.subscribe(fragment, {"r": run_id}), seconds=60)
        bad = await ws.collect(await ws.subscribe(SLIM, {"r": None}), seconds=10)
        unknown = await ws.collect(
            await ws.subscribe("subscription { runEvents(runId: 1) { nope } }", {}), seconds=10
        )
        other = register(rest, "Elsewhere")
        foreign = await ws.collect(await ws.subscribe(SLIM, {"r": _start(rest, other)}))
    assert plain.completed
    assert [e["seq"] for e in plain.events] == [e["seq"] for e in rest.events(owner.token, run_id)]
    assert bad.errors
    assert unknown.errors
    assert [e["extensions"]["code"] for e in foreign.errors] == ["NOT_FOUND"]
    assert foreign.errors[0]["path"] == ["runEvents"]
