"""A minimal HTTP/1.1 sink on loopback for the HTTP workloads (W6, W7): every request gets
``200 {"ok":true,"n":<count>}`` at once, connections kept alive. It runs in the bench client's
event loop, so its (small) CPU time counts under "bench client"."""

from __future__ import annotations

import asyncio
import contextlib


class Sink:
    _server: asyncio.Server

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                body = b'{"ok":true,"n":%d}' % self.requests
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        writer.close()

    async def start(self) -> Sink:
        """Listen on ``127.0.0.1:<self.port>`` until ``close``."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        self._server.close()
