"""``GET /api/runs/{id}/stream``: the ``runEvents`` subscription as Server-Sent Events.

Each stored event is one SSE event named after its type, with ``id`` = its ``seq`` and
``data`` = the REST event JSON; a browser's automatic reconnect sends ``Last-Event-ID`` and
resumes after it. ``STEP_OUTPUT_DELTA`` events carry no ``id`` (they are never stored, so
they never move the resume point). The stream ends after the run's terminal event, or when the
caller's token expires (an ``error`` event with ``UNAUTHENTICATED``, even on a quiet run).

A stored event is encoded once per process (kept by run and ``seq``, bounded), however many
streams of its run are open: each stream writes the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Final

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from treadle.errors import TreadleError, UnauthenticatedError, ValidationError
from treadle.resources import Resources
from treadle.rest.params import parse_int
from treadle.security import Actor, bearer_token
from treadle.services import runs
from treadle.services.context import count_api_call, open_service_context
from treadle.services.follow import Item, follow_events
from treadle.services.views import EventView

KEEP: Final = 16_384  # encoded events kept, a few hundred bytes each
_ENCODED: OrderedDict[tuple[uuid.UUID, int], bytes] = OrderedDict()


def _seq_param(raw: str | None, name: str) -> int:
    value = parse_int(raw, name, 0)
    if value < 0:
        raise ValidationError(f"{name} must be >= 0", fields={name: "must be >= 0"})
    return value


def _encode(item: Item) -> ServerSentEvent:
    if isinstance(item, EventView):
        return ServerSentEvent(data=_json(item.to_json()), event=item.type, id=str(item.seq))
    delta = {
        "type": item.get("type"),
        "runId": item.get("runId"),
        "nodeId": item.get("nodeId"),
        "data": item.get("data"),
    }
    return ServerSentEvent(data=_json(delta), event=str(item.get("type")))


def _shared(item: Item) -> bytes:
    """The SSE bytes of ``item``; a stored event's are computed once and shared."""
    if not isinstance(item, EventView):
        return _encode(item).encode()
    key = (item.run_id, item.seq)
    encoded = _ENCODED.get(key)
    if encoded is None:
        encoded = _ENCODED[key] = _encode(item).encode()
        if len(_ENCODED) > KEEP:
            _ENCODED.popitem(last=False)
    return encoded


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def _events(
    follow: AsyncGenerator[Item, None], actor: Actor
) -> AsyncGenerator[bytes | ServerSentEvent, None]:
    async with contextlib.aclosing(follow) as items:
        try:
            while True:
                try:
                    item = await _next_before_expiry(items, actor)
                except StopAsyncIteration:
                    return
                yield _shared(item)
        except TreadleError as exc:
            # Headers are gone by now: the error becomes the stream's last event.
            body = {"error": {"code": exc.code, "message": exc.message}}
            yield ServerSentEvent(data=_json(body), event="error")


async def _next_before_expiry(items: AsyncGenerator[Item, None], actor: Actor) -> Item:
    """The next item, or UNAUTHENTICATED once the token expires (a quiet run included)."""
    if actor.expires_at is None:
        return await anext(items)
    left = actor.expires_at - time.time()
    try:
        async with asyncio.timeout(max(left, 0.0)):
            return await anext(items)
    except TimeoutError:
        raise UnauthenticatedError("token expired; reconnect with a new one") from None


async def stream_run_events(request: Request) -> Response:
    """Stored events after ``afterSeq`` (or ``Last-Event-ID``), then live ones, as SSE."""
    resources: Resources = request.state.resources
    # EventSource in browsers cannot set headers, hence ?token= as well.
    token = bearer_token(request.headers.get("authorization")) or request.query_params.get("token")
    actor = resources.tokens.authenticate(token)
    await count_api_call(resources, actor)
    after = max(
        _seq_param(request.query_params.get("afterSeq"), "afterSeq"),
        _seq_param(request.headers.get("last-event-id"), "Last-Event-ID"),
    )
    async with open_service_context(resources, actor) as ctx:
        run = await runs.require_run(ctx, request.path_params["id"])  # another tenant's: 404
    follow = follow_events(resources, run.tenant_id, run.id, after)
    return EventSourceResponse(
        _events(follow, actor),
        ping=resources.settings.treadle_ws_ping_seconds,
        headers={"Cache-Control": "no-store"},
    )
