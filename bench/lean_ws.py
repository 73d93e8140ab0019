"""A lean websocket client for fan-out benchmarks: thousands of sockets in one process.

A full client library spends tens of microseconds per message in Python (frame objects, a
receive queue, a task per socket); with 10,000 sockets that would measure the client. This one
is an ``asyncio.Protocol`` that parses frames in ``data_received``, stamps each text frame with
``time.time()`` on arrival and keeps its bytes; JSON is parsed after the measurement.

Scope: loopback, ``ws://`` only, no extensions, frames from the server unmasked (RFC 6455),
frames to the server masked with a zero key (allowed; the payload is then unchanged).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import Final, cast
from urllib.parse import urlsplit

TEXT: Final = 0x1
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA


def _frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + b"\x00\x00\x00\x00" + payload  # zero mask key: payload unchanged


class LeanSocket(asyncio.Protocol):
    """One client websocket; ``frames`` holds (arrival time, text bytes) of every text frame."""

    def __init__(self, on_text: Callable[[LeanSocket, bytes], None] | None = None) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.on_text = on_text
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._handshaken = False

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._handshaken:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
            del self._buffer[: end + 4]
            if b" 101 " not in status:
                self._fail(ConnectionError(status.decode(errors="replace")))
                return
            self._handshaken = True
            self.opened.set_result(None)
        self._parse(time.time())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- frames -----------------------------------------------------------------------------

    def _parse(self, now: float) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            opcode, size, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, start = struct.unpack_from("!H", buf, 2)[0], 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, start = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < start + size:
                return
            payload = bytes(buf[start : start + size])
            del buf[: start + size]
            self._on_frame(opcode, payload, now)

    def _on_frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == TEXT:
            self.frames.append((now, payload))
            if self.on_text is not None:
                self.on_text(self, payload)
        elif opcode == PING:
            self._write(_frame(PONG, payload))
        elif opcode == CLOSE and self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    # --- API ------------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._write(_frame(TEXT, text.encode()))

    def close(self) -> None:
        self._write(_frame(CLOSE, struct.pack("!H", 1000)))
        if self._transport is not None:
            self._transport.close()


async def open_socket(
    url: str,
    subprotocol: str | None = None,
    on_text: Callable[[LeanSocket, bytes], None] | None = None,
) -> LeanSocket:
    """Connect to ``ws://host:port/path?query`` and finish the opening handshake."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(lambda: LeanSocket(on_text), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    sock._write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await sock.opened
    return sock
