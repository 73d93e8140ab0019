"""ASGI middleware: request ids and the request body cap (checked while streaming)."""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from treadle.errors import PayloadTooLargeError
from treadle.logging import request_id_var


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
    """Answer 413 for bodies over ``max_bytes`` without reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await _reject(send, self.max_bytes)
            return
        guard = _BodyGuard(receive, send, self.max_bytes)
        try:
            await self.app(scope, guard.receive, guard.send)
        except PayloadTooLargeError:
            await guard.reject()


class _BodyGuard:
    """Counts request bytes as they stream in; past the cap, the answer is 413."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive, self._send, self._max = receive, send, max_bytes
        self._received = 0
        self._exceeded = self._started = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._max:
                self._exceeded = True
                raise PayloadTooLargeError(_message(self._max))
        return message

    async def send(self, message: Message) -> None:
        # An app that swallowed the error (and answers 400) still gets a 413 sent for it.
        if self._exceeded:
            await self.reject()
            return
        self._started = self._started or message["type"] == "http.response.start"
        await self._send(message)

    async def reject(self) -> None:
        if not self._started:
            self._started = True
            await _reject(self._send, self._max)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


def _message(max_bytes: int) -> str:
    return f"request body exceeds {max_bytes} bytes"


async def _reject(send: Send, max_bytes: int) -> None:
    body = json.dumps(
        {"error": {"code": PayloadTooLargeError.code, "message": _message(max_bytes)}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
