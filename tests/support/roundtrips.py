"""A loopback TCP proxy that counts round trips: for tests that pin how many a path costs.

A round trip (an exchange) is the client sending (in one write or several) and then the server
answering. Commands a client pipelines, sent before it reads, count once: that is the cost that
matters, the wait for the other side. Data the server sends unasked (pub/sub pushes) counts
nothing. The proxy runs its own event loop in a thread, so it can sit in front of a server
running in another thread or process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class _Counter:
    exchanges: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RoundTripProxy:
    """``with RoundTripProxy(host, port) as proxy``: connect to ``127.0.0.1:proxy.port``."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._counter = _Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def exchanges(self) -> int:
        with self._counter.lock:
            return self._counter.exchanges

    def reset(self) -> None:
        with self._counter.lock:
            self._counter.exchanges = 0

    def __enter__(self) -> RoundTripProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        asked = [False]  # the client sent something the server has not answered yet

        async def upstream() -> None:
            while data := await client_r.read(65536):
                asked[0] = True
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if asked[0]:
                    asked[0] = False
                    with self._counter.lock:
                        self._counter.exchanges += 1
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        with contextlib.suppress(Exception):
            await asyncio.gather(upstream(), downstream())
        for writer in (client_w, server_w):
            with contextlib.suppress(Exception):
                writer.close()


@contextlib.contextmanager
def counting(*proxies: RoundTripProxy) -> Iterator[list[int]]:
    """Round trips of each proxy during the block: ``with counting(pg, redis) as counts``."""
    for proxy in proxies:
        proxy.reset()
    counts: list[int] = []
    yield counts
    counts.extend(proxy.exchanges for proxy in proxies)
