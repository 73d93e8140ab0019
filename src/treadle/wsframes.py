"""Websocket text frames written straight to uvicorn's transport, for the live fan-out.

A fan-out writes the same bytes to thousands of sockets. Through ASGI each of those writes
costs a ``websocket.send`` message down the middleware stack and a frame built by the
websockets library; here the frame is built once and each socket costs one ``write``.

Invariants:
- Only uvicorn's websockets-sansio protocol is written to directly; ``FramesMiddleware`` (the
  outermost middleware, where ``send`` is still uvicorn's own bound method) records it in the
  scope. Any other server, protocol or wrapper: ``writer_for`` returns None and the caller
  sends through ASGI as usual.
- ``FrameWriter.write`` writes only to an open socket (handshake done, no close sent or
  received) whose transport is not paused; otherwise it writes nothing and returns False, and
  the caller takes the ASGI path, which waits for the socket to drain (so a slow reader still
  backs up into its own bounded buffer, never into memory here).
- Frames are unmasked, unfragmented, uncompressed text frames (RSV bits clear), which a
  client must accept whatever extensions were negotiated (RFC 6455 5.1, RFC 7692 6).
- Writes are coalesced: frames accepted during one turn of the event loop go out in one
  ``transport.write`` per socket at the start of the next turn (one callback for all sockets).
  While a socket has frames waiting, later frames join them, so one socket's frames keep their
  order; a caller about to send through ASGI on the same socket calls ``flush`` first. Frames
  still waiting when the socket closes are dropped with it. Under load, while one batch is
  being written, the next messages pile up and leave together: fewer writes per delivery.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from typing import TYPE_CHECKING, Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.protocol import State

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn without websockets installed
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

KEY: Final = "treadle.ws_protocol"
TEXT: Final = 0x81  # FIN + text opcode


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (valid UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", TEXT, 126, size) + payload
    return struct.pack("!BBQ", TEXT, 127, size) + payload


class FramesMiddleware:
    """Records uvicorn's websocket protocol object in the scope (under ``KEY``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and WebSocketsSansIOProtocol is not None:
            protocol = getattr(send, "__self__", None)
            if isinstance(protocol, WebSocketsSansIOProtocol):
                scope[KEY] = protocol
        await self.app(scope, receive, send)


class FrameWriter:
    """Writes whole frames to one socket's transport while it is open and not paused."""

    __slots__ = ("_flusher", "_pending", "_protocol")

    def __init__(self, protocol: Any, flusher: _Flusher) -> None:
        self._protocol = protocol
        self._flusher = flusher
        self._pending: list[bytes] | None = None

    def open(self) -> bool:
        protocol = self._protocol
        return not (
            protocol.close_sent
            or protocol.disconnected
            or protocol.conn.state is not State.OPEN
            or protocol.transport.is_closing()
        )

    def write(self, frame: bytes) -> bool:
        """Accept ``frame`` for this turn's write; False (nothing done): use ASGI."""
        pending = self._pending
        if pending is not None:
            pending.append(frame)  # after the frames already waiting: order kept
            return True
        if not self._protocol.writable.is_set() or not self.open():
            return False
        self._pending = [frame]
        self._flusher.add(self)
        return True

    def flush(self) -> None:
        """Write the waiting frames now (before anything else is sent on this socket)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self.open():
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            self._protocol.transport.write(data)


class _Flusher:
    """One per event loop: flushes every writer with waiting frames, in one callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writers: list[FrameWriter] = []

    def add(self, writer: FrameWriter) -> None:
        if not self._writers:
            self._loop.call_soon(self._flush)
        self._writers.append(writer)

    def _flush(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.flush()


_FLUSHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = (
    weakref.WeakKeyDictionary()
)


def _flusher() -> _Flusher:
    loop = asyncio.get_running_loop()
    flusher = _FLUSHERS.get(loop)
    if flusher is None:
        flusher = _FLUSHERS[loop] = _Flusher(loop)
    return flusher


def writer_for(websocket: WebSocket) -> FrameWriter | None:
    """A direct writer for ``websocket``, or None (then send through ASGI)."""
    protocol = websocket.scope.get(KEY)
    if protocol is None or not getattr(protocol, "handshake_complete", False):
        return None
    return FrameWriter(protocol, _flusher())
