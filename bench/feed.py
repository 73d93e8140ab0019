"""``--observe feed``: see a run's end on the tenant's run feed (``WS /ws``), one socket per client.

What a dashboard does: one websocket carries every run update of the tenant, so watching a run
costs no request of its own (``--observe sse`` opens ``GET /api/runs/:id/stream`` per run: a
request, an access check and a replay from the database; ``poll`` asks every 2 ms). The feed is
live-only: updates that arrive before the client waits for their run are kept (terminal ones
only), and after a ``RESYNC`` (the API dropped updates) a waiting run is asked for once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Final

from bench.lean_ws import LeanSocket, open_socket

TERMINAL_UPDATES: Final = {
    "RUN_COMPLETED": "COMPLETED",
    "RUN_FAILED": "FAILED",
    "RUN_CANCELLED": "CANCELLED",
}


class RunFeed:
    """Terminal run updates of one tenant, as they arrive on ``WS /ws?token=…``."""

    def __init__(self) -> None:
        self.socket: LeanSocket | None = None
        self.ended: dict[str, str] = {}  # run id -> terminal status, until someone takes it
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.resyncs = 0

    async def open(self, base_url: str, token: str) -> None:
        url = base_url.replace("http://", "ws://", 1).rstrip("/") + f"/ws?token={token}"
        self.socket = await open_socket(url, on_text=self._on_text)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def _on_text(self, _socket: LeanSocket, payload: bytes) -> None:
        update = json.loads(payload)
        kind = update.get("type")
        if kind == "RESYNC":
            self.resyncs += 1
            for future in self.waiting.values():
                if not future.done():
                    future.set_result("RESYNC")
            return
        status = TERMINAL_UPDATES.get(kind)
        if status is None:
            return
        run_id = str(update.get("runId"))
        future = self.waiting.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(status)
        else:
            self.ended[run_id] = status

    async def wait(self, run_id: str, check: Callable[[str], Awaitable[str | None]]) -> str:
        """The run's terminal status; ``check(run_id)`` asks the API after a RESYNC."""
        while True:
            if run_id in self.ended:
                return self.ended.pop(run_id)
            future = asyncio.get_running_loop().create_future()
            self.waiting[run_id] = future
            try:
                status = await future
            finally:
                self.waiting.pop(run_id, None)
            if status != "RESYNC":
                return status
            found = await check(run_id)
            if found is not None:
                return found
