"""``WS /ws?token=JWT``: the tenant's run updates as plain JSON over a websocket.

Server → client, one JSON object per text frame:
- a run update, as ``runUpdates``: ``{"type","runId","workflowId","status","nodeId","seq","at"}``
  (``type`` is the event type; ``{"type": "RESYNC", …}`` means updates were dropped: refetch);
- ``{"type": "event", "runId", "event": {…}}``: the full events of a run the client subscribed to
  (stored ones from ``afterSeq``, then live, gap-free, as ``runEvents``), then
  ``{"type": "complete", "runId"}`` after its terminal event;
- ``{"type": "error", "code", "message"[, "runId"]}``.

A stored event's frame is encoded once per process (kept by run and ``seq``, bounded) and, on
uvicorn's websockets-sansio protocol, written straight to every socket that follows the run;
a caught-up follower gets live events inline (see ``services.follow`` and ``wsframes``).

Client → server: ``{"subscribe": runId[, "afterSeq": n]}`` and ``{"unsubscribe": runId}``.
A missing or bad token: an ``error`` frame, then close 4401; when the token expires, the same.
Another tenant's run is NOT_FOUND, as everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from treadle.errors import (
    RateLimitedError,
    TreadleError,
    UnauthenticatedError,
    ValidationError,
)
from treadle.resources import Resources
from treadle.security import Actor
from treadle.services import runs
from treadle.services.context import open_service_context
from treadle.services.follow import Item, follow_events
from treadle.services.updates import Update, follow_updates, next_before_expiry
from treadle.services.views import EventView
from treadle.wsframes import FrameWriter, text_frame, writer_for

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED: Final = 4401
CLOSE_LIMITED: Final = 4429
KEEP: Final = 16_384  # encoded event frames kept, a few hundred bytes each
_FRAMES: OrderedDict[tuple[str, int], tuple[str, bytes]] = OrderedDict()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error(exc: TreadleError, run_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if run_id is not None:
        body["runId"] = run_id
    return body


def _event_frame(run_id: str, item: Item) -> tuple[str, bytes]:
    """The ``event`` message of ``item`` as text and as a websocket frame; a stored event's
    are built once per process and shared by every socket following its run."""
    if not isinstance(item, EventView):
        text = _json({"type": "event", "runId": run_id, "event": item})
        return text, text_frame(text.encode())
    key = (run_id, item.seq)
    hit = _FRAMES.get(key)
    if hit is None:
        text = _json({"type": "event", "runId": run_id, "event": item.to_json()})
        hit = _FRAMES[key] = (text, text_frame(text.encode()))
        if len(_FRAMES) > KEEP:
            _FRAMES.popitem(last=False)
    return hit


class _RunSink:
    """``services.follow``'s sink for one followed run: write the shared frame, or decline."""

    __slots__ = ("run_id", "writer")

    def __init__(self, run_id: str, writer: FrameWriter) -> None:
        self.run_id, self.writer = run_id, writer

    def __call__(self, item: Item) -> bool:
        return self.writer.write(_event_frame(self.run_id, item)[1])


class FeedConnection:
    """One ``/ws`` socket: the tenant's updates plus the runs the client subscribed to."""

    def __init__(self, websocket: WebSocket, resources: Resources, actor: Actor) -> None:
        self.websocket = websocket
        self.resources = resources
        self.actor = actor
        self.runs: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self.writer = writer_for(websocket)

    async def send(self, body: dict[str, Any]) -> None:
        await self._send_text(_json(body))

    async def _send_text(self, text: str) -> None:
        async with self._send_lock:
            if self.writer is not None:
                self.writer.flush()  # frames written directly go first
            await self.websocket.send_text(text)

    async def send_event(self, run_id: str, item: Item) -> None:
        text, frame = _event_frame(run_id, item)
        if self.writer is None or not self.writer.write(frame):
            await self._send_text(text)

    async def serve(self, updates: AsyncGenerator[Update | None, None]) -> None:
        pump = asyncio.create_task(self._pump(updates))
        try:
            async for text in self.websocket.iter_text():
                await self._on_message(text)
        except WebSocketDisconnect:
            pass
        finally:
            for task in (pump, *self.runs.values()):
                task.cancel()
            for task in (pump, *self.runs.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _pump(self, updates: AsyncGenerator[Update | None, None]) -> None:
        """Forward updates until the token expires (then say so and close)."""
        try:
            while True:
                update = await next_before_expiry(updates, self.actor)
                if update is not None:
                    await self.send(update)
        except UnauthenticatedError as exc:
            await self.send(_error(exc))
            await self.websocket.close(CLOSE_UNAUTHENTICATED, "token expired")
        except (StopAsyncIteration, WebSocketDisconnect, RuntimeError):
            return  # the socket is closing

    async def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if isinstance(message, dict) and isinstance(message.get("subscribe"), str):
            await self._subscribe(message["subscribe"], message.get("afterSeq", 0))
        elif isinstance(message, dict) and isinstance(message.get("unsubscribe"), str):
            task = self.runs.pop(message["unsubscribe"], None)
            if task is not None:
                task.cancel()
        else:
            problem = ValidationError('send {"subscribe": runId} or {"unsubscribe": runId}')
            await self.send(_error(problem))

    async def _subscribe(self, run_id: str, after_seq: object) -> None:
        if run_id in self.runs:
            return
        try:
            if not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < 0:
                raise ValidationError("afterSeq must be an integer >= 0")
            limit = self.resources.settings.treadle_max_subscriptions_per_connection
            if len(self.runs) >= limit:
                raise RateLimitedError("too many runs followed on this socket", retry_after=5)
            async with open_service_context(self.resources, self.actor) as ctx:
                run = await runs.require_run(ctx, run_id)  # another tenant's: NOT_FOUND
        except TreadleError as exc:
            await self.send(_error(exc, run_id))
            return
        sink = None if self.writer is None else _RunSink(run_id, self.writer)
        follow = follow_events(self.resources, run.tenant_id, run.id, after_seq, sink)
        task = asyncio.create_task(self._follow(run_id, follow))
        self.runs[run_id] = task
        task.add_done_callback(lambda _: self._forget(run_id, task))

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self.runs.get(run_id) is task:
            del self.runs[run_id]

    async def _follow(self, run_id: str, follow: AsyncGenerator[Item, None]) -> None:
        try:
            async with contextlib.aclosing(follow) as items:
                try:
                    async for item in items:
                        await self.send_event(run_id, item)
                except TreadleError as exc:
                    await self.send(_error(exc, run_id))
                    return
            await self.send({"type": "complete", "runId": run_id})
        except (WebSocketDisconnect, RuntimeError, OSError):
            logger.debug("run feed socket closed while following %s", run_id)


async def run_feed(websocket: WebSocket) -> None:
    """Accept, authenticate from ``?token=``, attach to the tenant's updates, serve."""
    resources: Resources = websocket.state.resources
    await websocket.accept()
    try:
        actor = resources.tokens.authenticate(websocket.query_params.get("token"))
        updates = follow_updates(resources, actor)
        await anext(updates)  # attached; counted against the tenant's limit
    except TreadleError as exc:
        await websocket.send_text(_json(_error(exc)))
        limited = isinstance(exc, RateLimitedError)
        await websocket.close(CLOSE_LIMITED if limited else CLOSE_UNAUTHENTICATED, exc.code)
        return
    async with contextlib.aclosing(updates):
        await FeedConnection(websocket, resources, actor).serve(updates)
