"""A deterministic, offline ``ModelClient`` used when no OpenAI key is configured."""

from __future__ import annotations

import asyncio
import json
from typing import Final

from treadle.engine.ai import Completion, CompletionRequest, OnDelta

_PREVIEW_WORDS: Final = 12
_PREVIEW_CHARS: Final = 100
_CHUNK_CHARS: Final = 16


class MockModelClient:
    """Answers from the prompt alone: same request, same completion, no network.

    Text mode answers ``"Mock completion: <first words of the prompt>"``; json mode answers
    ``{"mock": true, "prompt": <first 100 characters>}``. Token counts are word counts.
    """

    async def complete(
        self, request: CompletionRequest, *, on_delta: OnDelta | None = None
    ) -> Completion:
        """Build the mock answer; with ``on_delta``, hand it over in several chunks first."""
        text, finish_reason = _answer(request)
        if on_delta is not None:
            for start in range(0, len(text), _CHUNK_CHARS):
                await on_delta(text[start : start + _CHUNK_CHARS])
                # Yield so the chunks interleave with other work as a real stream's would.
                await asyncio.sleep(0)
        return Completion(
            text=text,
            model=request.model,
            finish_reason=finish_reason,
            prompt_tokens=_count_words(request.system or "") + _count_words(request.prompt),
            completion_tokens=_count_words(text),
            mock=True,
        )

    async def aclose(self) -> None:
        """Nothing to release; present so every model client can be closed the same way."""


def _answer(request: CompletionRequest) -> tuple[str, str]:
    if request.response_format == "json":
        preview = request.prompt[:_PREVIEW_CHARS]
        return json.dumps({"mock": True, "prompt": preview}, ensure_ascii=False), "stop"
    words = ["Mock", "completion:", *request.prompt.split()[:_PREVIEW_WORDS]]
    if request.max_tokens is not None and len(words) > request.max_tokens:
        return " ".join(words[: request.max_tokens]), "length"
    return " ".join(words), "stop"


def _count_words(text: str) -> int:
    return len(text.split())
