"""A small graphql-transport-ws client on the ``websockets`` package (tests and benchmarks).

It answers the server's ``ping`` with ``pong``, keeps messages of several subscriptions on one
socket apart, and turns a close into ``WsClosedError`` carrying the close code. ``Stalled`` is a
subscriber that stops reading (a slow consumer, for back-pressure tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.support.client import RestApi

PROTOCOL = Subprotocol("graphql-transport-ws")
EVENT_FIELDS = "id runId seq type nodeId data createdAt"
RUN_EVENTS = (
    f"subscription($r: ID!, $a: Int) {{ runEvents(runId: $r, afterSeq: $a) {{ {EVENT_FIELDS} }} }}"
)


class WsClosedError(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"websocket closed: {code} {reason}")
        self.code, self.reason = code, reason


@contextlib.contextmanager
def rest_client(base_url: str) -> Iterator[RestApi]:
    """A REST client for the same server (typed, unlike ``with RestApi(...)``)."""
    client = RestApi(base_url)
    try:
        yield client
    finally:
        client.http.close()


def ws_url(base_url: str, path: str = "/graphql") -> str:
    return base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + path


@dataclass
class Collected:
    """What one subscription produced: ``next`` payloads' data, errors, how it ended."""

    events: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.time() of each event
    errors: list[Any] = field(default_factory=list)
    completed: bool = False

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events if e["seq"] is not None]

    @property
    def stored(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["seq"] is not None]


class GraphQLWs:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.pings = 0
        self._ids = itertools.count(1)
        self._inbox: dict[str, deque[dict[str, Any]]] = defaultdict(deque)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        base_url: str,
        token: str | None = None,
        *,
        payload: dict[str, Any] | None = None,
        query: str = "",
        init: bool = True,
        **options: Any,
    ) -> AsyncIterator[GraphQLWs]:
        """Open a socket to ``/graphql``; with ``init``, send ``connection_init`` and await ack."""
        options.setdefault("proxy", None)
        options.setdefault("open_timeout", 10)
        url = ws_url(base_url) + query
        async with connect(url, subprotocols=[PROTOCOL], **options) as conn:
            client = cls(conn)
            if init:
                await client.init({"token": token} if payload is None and token else payload)
            yield client

    async def init(self, payload: dict[str, Any] | None) -> None:
        await self.send({"type": "connection_init", "payload": payload or {}})
        message = await self.recv()
        if message["type"] != "connection_ack":
            raise AssertionError(f"expected connection_ack, got {message}")

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send(json.dumps(message))

    async def recv(self, seconds: float = 30) -> dict[str, Any]:
        """The next message that is not a ping (pings are answered here)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                raw = await asyncio.wait_for(self.conn.recv(), deadline - time.monotonic())
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                raise WsClosedError(code, exc.rcvd.reason if exc.rcvd else "") from exc
            message: dict[str, Any] = json.loads(raw)
            if message.get("type") == "ping":
                self.pings += 1
                await self.send({"type": "pong"})
                continue
            return message

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        op_id = str(next(self._ids))
        payload = {"query": query, "variables": variables}
        await self.send({"id": op_id, "type": "subscribe", "payload": payload})
        return op_id

    async def run_events(self, run_id: str, after_seq: int | None = 0) -> str:
        return await self.subscribe(RUN_EVENTS, {"r": run_id, "a": after_seq})

    async def complete(self, op_id: str) -> None:
        await self.send({"id": op_id, "type": "complete"})

    async def next_for(self, op_id: str, seconds: float = 30) -> dict[str, Any]:
        """The next message of subscription ``op_id`` (others are kept for their readers)."""
        deadline = time.monotonic() + seconds
        while not self._inbox[op_id]:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            self._inbox[str(message.get("id"))].append(message)
        return self._inbox[op_id].popleft()

    async def collect(
        self, op_id: str, *, seconds: float = 30, limit: int | None = None
    ) -> Collected:
        """Gather ``op_id``'s events until it completes or errors (or ``limit`` events)."""
        out = Collected()
        deadline = time.monotonic() + seconds
        while limit is None or len(out.events) < limit:
            message = await self.next_for(op_id, deadline - time.monotonic())
            if message["type"] == "next":
                payload = message["payload"]
                out.errors.extend(payload.get("errors") or [])
                if payload.get("data"):
                    out.events.append(payload["data"]["runEvents"])
                    out.received_at.append(time.time())
            elif message["type"] == "error":
                out.errors.extend(message["payload"])
                return out
            elif message["type"] == "complete":
                out.completed = True
                return out
        return out


async def follow_run(
    base_url: str, token: str, run_id: str, after_seq: int = 0, seconds: float = 30
) -> Collected:
    """One socket, one ``runEvents`` subscription, collected to its end."""
    async with GraphQLWs.connect(base_url, token) as ws:
        op_id = await ws.run_events(run_id, after_seq)
        return await ws.collect(op_id, seconds=seconds)


@dataclass
class Stalled:
    """A subscriber with a tiny receive window (set before connecting, so the server sees a
    small window from the start) that stops reading after subscribing."""

    ws: GraphQLWs
    op_id: str
    sock: socket.socket
    cm: contextlib.AbstractAsyncContextManager[GraphQLWs]

    @classmethod
    async def open(cls, url: str, token: str, run_id: str) -> Stalled:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        cm = GraphQLWs.connect(url, token, sock=sock, ping_interval=None)
        ws = await cm.__aenter__()
        return cls(ws, await ws.run_events(run_id), sock, cm)

    async def resume(self) -> Collected:
        """Read again, with a normal receive window, to the end of the subscription."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        return await self.ws.collect(self.op_id, seconds=30)
