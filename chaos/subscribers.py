"""Live ``runEvents`` followers that survive API deaths by reconnecting with their last seq."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from tests.support.ws import GraphQLWs

TERMINAL: Final = frozenset({"RUN_COMPLETED", "RUN_FAILED", "RUN_CANCELLED"})
QUIET_SECONDS: Final = 20.0  # a silent socket is fine (a delay, a slow retry): keep waiting


@dataclass
class Follower:
    """What one subscriber saw of one run, across all its connections."""

    run_id: str
    index: int
    prefer: int  # the API it connects to first
    received: list[int] = field(default_factory=list)  # seqs in arrival order
    attached: int | None = None  # the API whose subscription is live right now
    connections: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # why a connection ended early
    terminal: bool = False
    lost_at: float | None = None  # when the current disconnection began (monotonic)
    reconnect_seconds: list[float] = field(default_factory=list)
    # (event createdAt, seconds from createdAt until it arrived here), both wall clock
    latencies: list[tuple[float, float]] = field(default_factory=list)

    @property
    def last(self) -> int:
        return max(self.received, default=0)

    def record(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            self.received.append(seq)
            with contextlib.suppress(TypeError, ValueError):
                created = datetime.fromisoformat(event["createdAt"]).timestamp()
                self.latencies.append((created, time.time() - created))
        if event.get("type") in TERMINAL:
            self.terminal = True

    def _disconnected(self, reason: str) -> None:
        self.attached = None
        self.failures[reason] += 1
        if self.lost_at is None:
            self.lost_at = time.monotonic()

    async def follow(self, urls: Sequence[str], token: str, deadline: float) -> None:
        """Follow until the terminal event arrives or ``deadline`` (monotonic) passes."""
        api = self.prefer
        while not self.terminal and time.monotonic() < deadline:
            try:
                reason = await self._connection(urls[api], api, token, deadline)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = type(exc).__name__
            if not self.terminal:
                self._disconnected(reason)
                api = (api + 1) % len(urls)  # the other API first: this one may be dead
                await asyncio.sleep(0.2)
        self.attached = None

    async def _connection(self, url: str, api: int, token: str, deadline: float) -> str:
        """One socket and one subscription; returns why it ended."""
        async with GraphQLWs.connect(url, token, open_timeout=5) as ws:
            op_id = await ws.run_events(self.run_id, self.last)
            self.connections += 1
            self.attached = api
            if self.lost_at is not None:
                self.reconnect_seconds.append(time.monotonic() - self.lost_at)
                self.lost_at = None
            while time.monotonic() < deadline:
                try:
                    message = await ws.next_for(op_id, QUIET_SECONDS)
                except TimeoutError:
                    continue
                kind = message.get("type")
                if kind == "next":
                    payload = message.get("payload") or {}
                    data = payload.get("data")
                    if data and data.get("runEvents"):
                        self.record(data["runEvents"])
                    elif payload.get("errors"):
                        return "graphql error"
                elif kind == "error":
                    return "subscribe error"
                elif kind == "complete":
                    return "complete"
            with contextlib.suppress(Exception):
                await ws.complete(op_id)
            return "deadline"


def attached_to(followers: Sequence[Follower], api: int) -> int:
    return sum(1 for f in followers if f.attached == api and not f.terminal)
