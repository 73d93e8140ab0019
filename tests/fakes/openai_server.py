"""A small fake of OpenAI's Chat Completions endpoint, including SSE streaming."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_ERRORS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
}


@dataclass
class FakeOpenAI:
    """``POST /v1/chat/completions`` answering ``"Echo: <last user message>"``.

    With ``response_format`` json_object it answers ``{"echo": <message>}``; with ``stream``
    it sends the answer word by word as SSE, then a usage chunk when asked, then ``[DONE]``.
    ``fail_next(status, times)`` makes the next calls fail, and failures echo the request's
    ``Authorization`` header in their message, as a careless server might. ``delay_seconds``
    slows every answer down.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    delay_seconds: float = 0.0  # wait this long before answering (timeout tests)
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` calls with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append({"headers": dict(request.headers), "body": body})
            failure = self._failures.pop(0) if self._failures else None
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if failure is not None:
            return _error(failure, request.headers.get("authorization", ""))
        text = _answer(body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _sse(body, text, include_usage), media_type="text/event-stream"
            )
        return JSONResponse(_completion(body, text))


def _error(status: int, authorization: str) -> Response:
    kind, code = _ERRORS.get(status, ("server_error", "error"))
    message = f"failure for credentials {authorization}"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": code, "param": None}},
        status_code=status,
    )


def _answer(body: dict[str, Any]) -> str:
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    if (body.get("response_format") or {}).get("type") == "json_object":
        return json.dumps({"echo": user})
    return f"Echo: {user}"


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m["content"]).split()) for m in body["messages"])
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(body, text),
    }


def _chunk(body: dict[str, Any], choices: list[dict[str, Any]], usage: Any = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": body["model"],
        "choices": choices,
        "usage": usage,
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


async def _sse(body: dict[str, Any], text: str, include_usage: bool) -> AsyncIterator[bytes]:
    words = text.split(" ")
    for i, word in enumerate(words):
        piece = word if i == len(words) - 1 else word + " "
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        yield _chunk(body, [{"index": 0, "delta": delta, "finish_reason": None}])
    yield _chunk(body, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
    if include_usage:
        yield _chunk(body, [], _usage(body, text))
    yield b"data: [DONE]\n\n"
