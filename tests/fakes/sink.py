"""A recording HTTP sink: remembers every request and answers with scripted statuses."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Recorded:
    """One request as the sink saw it (header names lower-case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # wall clock on arrival, before any wait


@dataclass
class Sink:
    """Starlette app recording requests.

    Routes: ``/redirect?to=<url>[&status=302]`` redirects; ``/big?bytes=N`` sends N bytes;
    ``/slow[/...]?ms=N`` is recorded on arrival, then waits N ms before answering like any
    other path; every other path answers JSON ``{"ok": true, "path": ...}`` with the next
    scripted status for that path (default 200) and a ``set-cookie`` header.
    """

    requests: list[Recorded] = field(default_factory=list)
    _statuses: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=_METHODS)])

    def script(self, path: str, *statuses: int) -> None:
        """Answer the next requests to ``path`` with ``statuses``, in order."""
        with self._lock:
            self._statuses[path].extend(statuses)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(recorded)
            scripted = self._statuses.get(recorded.path)
            status = scripted.pop(0) if scripted else 200
        if recorded.path == "/redirect":
            target = request.query_params["to"]
            return RedirectResponse(
                target, status_code=int(request.query_params.get("status", 302))
            )
        if recorded.path == "/slow" or recorded.path.startswith("/slow/"):
            await asyncio.sleep(int(request.query_params.get("ms", "1000")) / 1000)
        if recorded.path == "/big":
            return Response(b"x" * int(request.query_params["bytes"]), media_type="text/plain")
        response = JSONResponse({"ok": True, "path": recorded.path}, status_code=status)
        response.set_cookie("session", "secret-cookie")
        return response
