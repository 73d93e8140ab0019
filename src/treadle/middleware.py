"""ASGI middleware: request ids; the request body cap and idle bound (checked while streaming)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from treadle.errors import PayloadTooLargeError, TreadleError, ValidationError
from treadle.logging import request_id_var

# How much of a refused body is read (and dropped) so the client gets its 413 (see _drain).
DRAIN_BYTES: Final = 64 * 1024 * 1024
DRAIN_SECONDS: Final = 10.0


class RequestContextMiddleware:
    """Give every request an id (echoed as ``X-Request-Id``) visible to logs and errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        # Kept on the scope too: the 500 handler runs outside this middleware.
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Answer 413 for bodies over ``max_bytes`` without reading them whole, and 400 for a body
    that stops arriving (shorter than its ``Content-Length``, or idle ``idle_seconds``)."""

    def __init__(self, app: ASGIApp, max_bytes: int, idle_seconds: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await _drain(receive)
            await _reject(send, PayloadTooLargeError(_too_large(self.max_bytes)))
            return
        guard = _BodyGuard(receive, send, self.max_bytes, self.idle_seconds)
        try:
            await self.app(scope, guard.receive, guard.send)
        except (PayloadTooLargeError, IncompleteBodyError):
            await guard.reject()


class IncompleteBodyError(ValidationError):
    """The client stopped sending (or went away) before its body was complete."""


class _BodyGuard:
    """Counts request bytes as they stream in; past the cap the answer is 413, and a body that
    stalls or is cut short is 400 (sent with ``Connection: close``: the rest never comes)."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int, idle: float) -> None:
        self._receive, self._send, self._max, self._idle = receive, send, max_bytes, idle
        self._received = 0
        self._refusal: TreadleError | None = None
        self._started = self._body_done = False

    async def receive(self) -> Message:
        if self._body_done:
            return await self._receive()  # after the body: only a disconnect, however late
        try:
            message = await asyncio.wait_for(self._receive(), self._idle)
        except TimeoutError:
            raise self._refuse(IncompleteBodyError("request body stopped arriving")) from None
        if message["type"] == "http.disconnect":
            raise self._refuse(IncompleteBodyError("request body is incomplete"))
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._body_done = not message.get("more_body", False)
            if self._received > self._max:
                raise self._refuse(PayloadTooLargeError(_too_large(self._max)))
        return message

    def _refuse(self, error: TreadleError) -> TreadleError:
        self._refusal = error
        return error

    async def send(self, message: Message) -> None:
        # An app that swallowed the error (and answers otherwise) still gets the refusal sent.
        if self._refusal is not None:
            await self.reject()
            return
        self._started = self._started or message["type"] == "http.response.start"
        await self._send(message)

    async def reject(self) -> None:
        if not self._started and self._refusal is not None:
            self._started = True
            if isinstance(self._refusal, PayloadTooLargeError) and not self._body_done:
                await _drain(self._receive)
            await _reject(self._send, self._refusal)


async def _drain(receive: Receive) -> None:
    """Read and drop what is left of a refused body, within a bound, before answering.

    A client that writes its whole body before reading (most do) would otherwise meet a
    closed socket and see a connection reset instead of the 413: the server closes with unread
    data, and the kernel answers with RST. Nothing is kept; past the bound the reset stands.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_SECONDS
    drained = 0
    while drained <= DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


def _too_large(max_bytes: int) -> str:
    return f"request body exceeds {max_bytes} bytes"


async def _reject(send: Send, error: TreadleError) -> None:
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
